"""Simulated GPU model servers on the planner's performance model (`forebay sim`).

`forebay.sim.server.create_sim_app(model, gpu, ...)` builds one server as a Starlette app;
`forebay.sim.engine` is its continuous-batching scheduler and `forebay.sim.kv_cache` its
paged, prefix-caching KV cache.
"""

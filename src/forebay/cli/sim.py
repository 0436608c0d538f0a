"""`forebay sim`: N simulated model servers on loopback, in one process and event loop."""

from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer

from forebay.cli.common import fail, out
from forebay.planner.catalogue import CatalogueError


def sim(
    servers: Annotated[int, typer.Option(min=1, max=256, help="How many servers.")] = 1,
    gpu: Annotated[str, typer.Option(help="Accelerator each server simulates.")] = "h100-sxm",
    model_name: Annotated[
        str, typer.Option("--model", help="Catalogue model or config.json.")
    ] = "llama-3.1-8b",
    gpus_per_replica: Annotated[int, typer.Option(min=1, help="Tensor parallelism.")] = 1,
    precision: Annotated[str, typer.Option(help="Weights: bf16, fp8 or int4.")] = "bf16",
    kv_dtype: Annotated[str, typer.Option(help="KV cache: bf16 or fp8.")] = "bf16",
    base_port: Annotated[int, typer.Option(min=1, max=65535, help="First port.")] = 8100,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    speedup: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds per real second.")
    ] = 1.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Running-sequence limit.")] = 256,
    kv_cache_tokens: Annotated[
        Optional[int],  # noqa: UP045 - typer needs Optional
        typer.Option(min=16, help="KV cache size; from memory left after weights if omitted."),
    ] = None,
    no_prefix_caching: Annotated[
        bool, typer.Option("--no-prefix-caching", help="Disable automatic prefix caching.")
    ] = False,
) -> None:
    """Run simulated OpenAI-compatible GPU model servers (timing from the planner's model)."""
    import uvicorn

    from forebay.sim.server import create_sim_app

    if precision not in ("bf16", "fp8", "int4") or kv_dtype not in ("bf16", "fp8"):
        raise fail("--precision is bf16|fp8|int4 and --kv-dtype bf16|fp8", 2)
    try:
        apps = [
            create_sim_app(
                model_name,
                gpu,
                tp=gpus_per_replica,
                precision=precision,  # type: ignore[arg-type]
                kv_dtype=kv_dtype,  # type: ignore[arg-type]
                speedup=speedup,
                max_batch=max_batch,
                kv_cache_tokens=kv_cache_tokens,
                prefix_caching=not no_prefix_caching,
            )
            for _ in range(servers)
        ]
    except (CatalogueError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    replica = apps[0].state.replica
    engine = apps[0].state.engine
    ttft, tpot = replica.unloaded_latency(1024, 256)
    out.print(
        f"forebay sim: {servers} x {replica.model.key} on {gpus_per_replica} x {replica.gpu.key} "
        f"({precision}), KV cache {engine.kv.total_blocks * engine.kv.block_size:,} tokens, "
        f"unloaded TTFT {ttft * 1e3:.1f} ms for 1024 prompt tokens, TPOT {tpot * 1e3:.2f} ms, "
        f"speed-up x{speedup:g}",
        highlight=False,
        soft_wrap=True,
    )
    configs = []
    for i, app in enumerate(apps):
        port = base_port + i
        out.print(f"  http://{host}:{port}/v1  (metrics http://{host}:{port}/metrics)")
        configs.append(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )

    async def serve_all() -> None:
        await asyncio.gather(*(uvicorn.Server(c).serve() for c in configs))

    asyncio.run(serve_all())

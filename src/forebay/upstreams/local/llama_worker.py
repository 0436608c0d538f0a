"""Worker process: SmolLM2 served by llama.cpp's own HTTP server (xllamacpp).

Run by the supervisor as `python -m forebay.upstreams.local.llama_worker ...`;
llama.cpp's server threads do the work, so this process only waits.
"""

from __future__ import annotations

import argparse

from forebay.upstreams.local.lifeline import exit_with_parent, wait_for_termination
from forebay.upstreams.local.model_files import smollm2_gguf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-name", default="smollm2-135m-instruct")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    exit_with_parent(args.parent_pid)

    import xllamacpp as xl

    params = xl.CommonParams()
    params.model.path = str(smollm2_gguf())
    params.n_ctx = args.ctx  # shared by all slots: each gets ctx / parallel
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.endpoint_metrics = True  # Prometheus /metrics, read by least-loaded routing
    params.endpoint_slots = True
    params.model_alias = {args.model_name}
    params.verbosity = 0  # keep prompts and generations out of the worker log
    server = xl.Server(params)  # starts listening; serves from its own threads
    wait_for_termination()
    del server


if __name__ == "__main__":
    main()

"""Capacity and power planning (`forebay plan`).

catalogue    accelerators and models, every figure with its source (data/*.yaml)
constants    the model's global constants; two calibrated on MLPerf (see validate)
performance  one engine step on one replica: compute, memory, interconnect, power
serving      a replica under Poisson load: batching, p99 TTFT/TPOT, max rate within SLO
traffic      request rate and token distributions, typed or from a JSONL trace
fleet        replicas, GPUs, kW and $ for a traffic profile
validate     predicted vs measured MLPerf Inference v4.1 Llama-2-70B
"""

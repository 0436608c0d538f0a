"""`forebay plan` (size a fleet) and `forebay plan validate` (check the model vs MLPerf)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from forebay.cli.common import err, fail, out, print_json
from forebay.planner.catalogue import (
    CatalogueError,
    KvDtype,
    Precision,
    accelerator,
    accelerators,
    model,
)
from forebay.planner.fleet import Economics, Option, plan_option
from forebay.planner.performance import Replica, smallest_fitting_tp
from forebay.planner.traffic import Tokens, Traffic, from_trace

app = typer.Typer(
    help="Plan GPUs, kW and $ for a traffic profile; `plan validate` checks the model.",
    add_completion=False,
)

PRECISIONS = ("bf16", "fp8", "int4")
KV_DTYPES = ("bf16", "fp8")


@app.callback(invoke_without_command=True)
def plan(
    ctx: typer.Context,
    model_name: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional
        typer.Option("--model", help="Catalogue model (llama-3.1-8b, ...) or a config.json."),
    ] = None,
    gpu: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Comma-separated accelerators; all in the catalogue when omitted."),
    ] = None,
    gpus_per_replica: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Tensor parallelism; the smallest that fits when omitted."),
    ] = None,
    precision: Annotated[str, typer.Option(help="Weights: bf16, fp8 or int4.")] = "bf16",
    kv_dtype: Annotated[str, typer.Option(help="KV cache: bf16 or fp8.")] = "bf16",
    rps: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(min=0.0, help="Requests per second (required unless the trace has times)."),
    ] = None,
    prompt_tokens: Annotated[str, typer.Option(help="Prompt tokens: MEAN or MEAN:P99.")] = "1024",
    output_tokens: Annotated[str, typer.Option(help="Output tokens: MEAN or MEAN:P99.")] = "256",
    trace: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="JSONL with prompt_tokens, output_tokens[, timestamp] per request."),
    ] = None,
    ttft_p99_ms: Annotated[
        float, typer.Option(min=1.0, help="SLO: p99 time to first token.")
    ] = 2000,
    tpot_p99_ms: Annotated[
        float, typer.Option(min=1.0, help="SLO: p99 time per output token.")
    ] = 200,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Engine limit on running sequences.")
    ] = 1024,
    pue: Annotated[float, typer.Option(min=1.0, help="Site power usage effectiveness.")] = 1.3,
    usd_per_kwh: Annotated[float, typer.Option(min=0.0, help="Electricity price.")] = 0.10,
    pricing: Annotated[str, typer.Option(help="on-demand or reserved.")] = "on-demand",
    reserved_discount: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Discount of reserved vs on-demand.")
    ] = 0.35,
    usd_per_gpu_hour: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(min=0.0, help="Override the catalogue's $/GPU-hour."),
    ] = None,
    power_cap_w: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(min=1.0, help="Per-GPU power cap below TDP."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """How many GPUs, kW and $ per million tokens a traffic profile needs, per accelerator."""
    if ctx.invoked_subcommand is not None:
        return
    if model_name is None:
        raise fail("--model is required (e.g. --model llama-3.1-8b)", 2)
    if precision not in PRECISIONS or kv_dtype not in KV_DTYPES:
        raise fail("--precision is bf16|fp8|int4 and --kv-dtype bf16|fp8", 2)
    if pricing not in ("on-demand", "reserved"):
        raise fail("--pricing is on-demand or reserved", 2)
    try:
        spec = model(model_name)
        gpus = (
            [accelerator(g.strip()) for g in gpu.split(",")]
            if gpu
            else list(accelerators().values())
        )
        if trace is not None:
            traffic = from_trace(trace, rps)
        elif rps is None:
            raise fail("--rps is required without a timestamped --trace", 2)
        else:
            traffic = Traffic(rps, Tokens.parse(prompt_tokens), Tokens.parse(output_tokens))
    except (CatalogueError, ValueError, OSError) as exc:
        raise fail(str(exc), 2) from None
    economics = Economics(
        pue=pue,
        usd_per_kwh=usd_per_kwh,
        pricing=pricing,  # type: ignore[arg-type]
        reserved_discount=reserved_discount,
        usd_per_gpu_hour=usd_per_gpu_hour,
    )
    options: list[Option] = []
    for acc in gpus:
        prec: Precision = precision  # type: ignore[assignment]
        kv: KvDtype = kv_dtype  # type: ignore[assignment]
        tp = gpus_per_replica or smallest_fitting_tp(spec, acc, prec)
        if tp is None:
            options.append(
                Option(acc.key, 0, prec, kv, None, None, ["does not fit on 8 GPUs per replica"])
            )
            continue
        replica = Replica(
            spec,
            acc,
            tp=tp,
            precision=prec,
            kv_dtype=kv,
            max_batch=max_batch,
            power_cap_w=power_cap_w,
        )
        options.append(
            plan_option(replica, traffic, ttft_p99_ms / 1e3, tpot_p99_ms / 1e3, economics)
        )
    if as_json:
        print_json(
            {
                "model": spec.key,
                "traffic": {
                    "rps": traffic.rps,
                    "prompt_tokens": asdict(traffic.prompt),
                    "output_tokens": asdict(traffic.output),
                    "output_tokens_per_s": traffic.output_tokens_per_s,
                },
                "slo": {"ttft_p99_ms": ttft_p99_ms, "tpot_p99_ms": tpot_p99_ms},
                "economics": asdict(economics),
                "options": [asdict(o) for o in options],
            }
        )
        return
    _wide().print(_table(spec.name, traffic, options))


def _wide() -> Console:
    """The terminal, or a wide console when piped (tables are not worth wrapping)."""
    return out if out.is_terminal else Console(width=200)


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _table(model_name: str, traffic: Traffic, options: list[Option]) -> Table:
    table = Table(
        "gpu",
        "tp",
        "max tok/s",
        "SLO tok/s",
        "p99 TTFT ms",
        "p99 TPOT ms",
        "conc.",
        "bottleneck",
        "replicas",
        "GPUs",
        "kW",
        "$/h",
        "$/M tok",
        "headroom",
        title=(
            f"{model_name}: {traffic.rps:g} req/s, {traffic.prompt.mean:g} -> "
            f"{traffic.output.mean:g} tokens ({traffic.output_tokens_per_s:,.0f} output tok/s)"
        ),
    )
    for o in options:
        r, f = o.replica, o.fleet
        if r is None or f is None:
            table.add_row(o.gpu, str(o.gpus_per_replica or "-"), *["-"] * 11, "; ".join(o.notes))
            continue
        table.add_row(
            o.gpu,
            str(o.gpus_per_replica),
            _fmt(r.max_output_tokens_per_s),
            _fmt(r.slo_output_tokens_per_s),
            _fmt(r.ttft_p99_ms),
            _fmt(r.tpot_p99_ms, ".1f"),
            str(r.max_concurrency),
            r.bottleneck,
            str(f.replicas),
            str(f.gpus),
            _fmt(f.kw, ".1f"),
            _fmt(f.usd_per_hour, ",.2f"),
            _fmt(f.usd_per_million_output_tokens, ".3f"),
            f"{f.headroom:.0%}",
        )
    return table


@app.command("validate")
def validate_cmd(
    recalibrate: Annotated[
        bool, typer.Option(help="Refit the calibrated constants before reporting.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Predicted vs measured MLPerf Inference v4.1 Llama-2-70B results, and the error."""
    from forebay.planner.constants import CONSTANTS
    from forebay.planner.validate import calibrate, ground_truth, report

    constants = calibrate() if recalibrate else CONSTANTS
    result = report(constants)
    truth = ground_truth()
    if as_json:
        print_json(
            {
                "dataset": truth.dataset.model_dump(),
                "calibration": truth.calibration,
                "constants": constants.model_dump(),
                "rows": [
                    {
                        "id": r.row.id,
                        "system": r.row.system,
                        "scenario": r.row.scenario,
                        "measured_tokens_per_s": r.row.measured_tokens_per_s,
                        "predicted_tokens_per_s": r.predicted_tokens_per_s,
                        "error": r.error,
                        "calibration": r.calibration,
                        "measured_ttft_p99_ms": r.row.measured_ttft_p99_ms,
                        "predicted_ttft_p99_ms": r.predicted_ttft_p99_ms,
                        "measured_tpot_p99_ms": r.row.measured_tpot_p99_ms,
                        "predicted_tpot_p99_ms": r.predicted_tpot_p99_ms,
                        "source": r.row.source,
                    }
                    for r in result.results
                ],
                "mae_held_out": result.mae,
            }
        )
        return
    table = Table(
        "row",
        "system",
        "measured tok/s",
        "predicted tok/s",
        "error",
        "role",
        title="MLPerf Inference v4.1, Llama-2-70B, closed, 8 accelerators (FP8)",
    )
    for r in result.results:
        table.add_row(
            r.row.id,
            r.row.system,
            f"{r.row.measured_tokens_per_s:,.0f}",
            f"{r.predicted_tokens_per_s:,.0f}",
            f"{r.error:+.1%}",
            "calibration" if r.calibration else "held out",
        )
    _wide().print(table)
    fitted = ", ".join(
        f"{name}={getattr(constants, name)} on {row}" for name, row in truth.calibration.items()
    )
    out.print(f"calibrated: {fitted}", highlight=False)
    out.print(f"mean absolute error on held-out rows: {result.mae:.1%}", highlight=False)
    if result.mae > 0.15:
        err.print("[red]error above the 15% target[/red]")
        raise typer.Exit(1)

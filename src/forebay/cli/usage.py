"""`forebay usage`: requests, tokens, cost and energy from the ledger."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from forebay.cli.common import (
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    err,
    note,
    open_store,
    out,
    print_json,
    when,
)


def usage(
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d, or a Unix time.")] = "24h",
    by: Annotated[str, typer.Option(help="Group by tenant, model, deployment or key.")] = "tenant",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print usage from the ledger: requests, tokens, cost and energy."""
    from forebay.ledger.query import parse_since, summarize

    if by not in ("tenant", "model", "deployment", "key"):
        err.print("[red]error:[/red] --by must be tenant, model, deployment or key")
        raise typer.Exit(2)
    try:
        start = parse_since(since)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    opened = open_store(config, data_dir)
    rows = summarize(opened.engine, since=start, by=by)  # type: ignore[arg-type]
    if not rows:
        note(f"no usage recorded since {when(start)} in {opened.where}")
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    if not rows:
        return
    table = Table(
        by,
        "requests",
        "errors",
        "prompt tok",
        "completion tok",
        "cost $",
        "energy Wh",
        "avg ms",
        title=f"usage since {when(start)}",
    )
    for r in rows:
        table.add_row(
            r.group,
            str(r.requests),
            str(r.errors),
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            f"{r.cost_usd:.6f}",
            f"{r.energy_wh:.4f}",
            f"{r.avg_latency_ms:.1f}",
        )
    out.print(table)

"""`forebay usage`: requests, tokens (with those read from and written to the
provider's prompt cache, and reasoning tokens), cost and energy from the ledger."""

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
    by: Annotated[
        str,
        typer.Option(
            help="Group by tenant, model, deployment, key or protocol (the client's API)."
        ),
    ] = "tenant",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print usage from the ledger: requests, tokens, cost and energy.

    Prompt tokens count every input token; "cached" and "cache write" are the parts
    of them read from and written to the provider's prompt cache. Completion tokens
    count every output token; "reasoning" is the part the model spent thinking."""
    from forebay.ledger.query import GROUPINGS, parse_since, summarize

    if by not in GROUPINGS:
        err.print(f"[red]error:[/red] --by must be one of {', '.join(GROUPINGS)}")
        raise typer.Exit(2)
    try:
        start = parse_since(since)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    opened = open_store(config, data_dir)
    rows = summarize(opened.engine, since=start, by=by)
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
        "cached",
        "cache write",
        "completion tok",
        "reasoning",
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
            f"{r.cache_read_tokens:,}",
            f"{r.cache_write_tokens:,}",
            f"{r.completion_tokens:,}",
            f"{r.reasoning_tokens:,}",
            f"{r.cost_usd:.6f}",
            f"{r.energy_wh:.4f}",
            f"{r.avg_latency_ms:.1f}",
        )
    out.print(table)

"""`forebay limits`: set, show and clear rate limits and budgets.

Running gateways pick changes up within key_refresh_s. `show` reads spend from
the ledger (what was really spent this UTC day and month); live counters,
including reservations in flight, are at GET /admin/limits/{scope}/{ref}.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from forebay.cli.common import ConfigOpt, DataDirOpt, JsonOpt, fail, open_database, out, print_json

if TYPE_CHECKING:
    from forebay.state.policy_store import PolicyStore

limits_app = typer.Typer(help="Set, show and clear rate limits and budgets.", no_args_is_help=True)

TenantOpt = Annotated[Optional[str], typer.Option(help="Tenant id or name.")]  # noqa: UP045
KeyOpt = Annotated[Optional[str], typer.Option("--key", help="Key id.")]  # noqa: UP045
BudgetOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="HARD or HARD/SOFT, e.g. 100/80 (SOFT only: /80)."),
]


def _scope(tenant: str | None, key: str | None) -> tuple[str, str]:
    if (tenant is None) == (key is None):
        raise fail("give exactly one of --tenant or --key", 2)
    return ("tenant", tenant) if tenant is not None else ("key", key or "")


def _subject(
    config: Path | None, data_dir: Path | None, scope: str, ref: str
) -> tuple[PolicyStore, str]:
    """The policy store and the subject's id, or exit saying there is no such subject."""
    from forebay.errors import TenancyError
    from forebay.state.policy_store import PolicyStore

    store = PolicyStore(open_database(config, data_dir))
    try:
        subject_id, _ = store.resolve(scope, ref)  # type: ignore[arg-type]
    except TenancyError as exc:
        raise fail(str(exc)) from None
    return store, subject_id


def _budget(text: str | None, flag: str) -> dict[str, float] | None:
    if text is None:
        return None
    hard, _, soft = text.partition("/")
    try:
        out = {"hard": float(hard)} if hard else {}
        if soft:
            out["soft"] = float(soft)
    except ValueError:
        raise fail(
            f"{flag} takes HARD or HARD/SOFT numbers, e.g. 100/80; got {text!r}", 2
        ) from None
    return out


@limits_app.command("set")
def limits_set(
    tenant: TenantOpt = None,
    key: KeyOpt = None,
    rpm: Annotated[Optional[int], typer.Option(help="Requests per minute.")] = None,  # noqa: UP045
    tpm: Annotated[Optional[int], typer.Option(help="Tokens per minute.")] = None,  # noqa: UP045
    concurrent: Annotated[
        Optional[int], typer.Option(help="Requests in flight.")  # noqa: UP045
    ] = None,
    usd_per_day: BudgetOpt = None,
    usd_per_month: BudgetOpt = None,
    tokens_per_day: BudgetOpt = None,
    tokens_per_month: BudgetOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Replace the limits of a tenant or key (limits not given are removed)."""
    from forebay.state.policy import LimitPolicy

    scope, ref = _scope(tenant, key)
    raw: dict[str, Any] = {"rpm": rpm, "tpm": tpm, "concurrent": concurrent}
    for name, text in [
        ("usd_per_day", usd_per_day),
        ("usd_per_month", usd_per_month),
        ("tokens_per_day", tokens_per_day),
        ("tokens_per_month", tokens_per_month),
    ]:
        raw[name] = _budget(text, "--" + name.replace("_", "-"))
    try:
        policy = LimitPolicy.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + str(first["loc"][0]).replace("_", "-")
        raise fail(f"{where}: {first['msg']}", 2) from None
    store, subject_id = _subject(config, data_dir, scope, ref)
    store.set(scope, subject_id, policy)  # type: ignore[arg-type]
    out.print(f"{scope} {subject_id}: {policy.model_dump(exclude_none=True)}", highlight=False)


@limits_app.command("clear")
def limits_clear(
    tenant: TenantOpt = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove every limit of a tenant or key."""

    scope, ref = _scope(tenant, key)
    store, subject_id = _subject(config, data_dir, scope, ref)
    if not store.clear(scope, subject_id):  # type: ignore[arg-type]
        raise fail(f"no limits are set for {scope} {subject_id}")
    out.print(f"cleared limits of {scope} {subject_id}")


@limits_app.command("show")
def limits_show(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Every policy, with this UTC day's and month's spend from the ledger."""
    from forebay.gateway.limits import period_bounds
    from forebay.state.policy_store import PolicyStore

    store = PolicyStore(open_database(config, data_dir))
    now = time.time()
    _, day_start, _ = period_bounds("day", now)
    _, month_start, _ = period_bounds("month", now)
    rows: list[dict[str, Any]] = []
    for (scope, subject_id), policy in sorted(store.all().items()):
        day_usd, day_tokens = store.spent(scope, subject_id, day_start)
        month_usd, month_tokens = store.spent(scope, subject_id, month_start)
        rows.append(
            {
                "scope": scope,
                "subject_id": subject_id,
                "policy": policy.model_dump(exclude_none=True),
                "spent": {
                    "usd_today": day_usd,
                    "tokens_today": day_tokens,
                    "usd_this_month": month_usd,
                    "tokens_this_month": month_tokens,
                },
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("scope", "id", "limits", "$ today", "tokens today", "$ month", "tokens month")
    for r in rows:
        policy_text = ", ".join(f"{k}={v}" for k, v in r["policy"].items())
        s = r["spent"]
        table.add_row(
            str(r["scope"]),
            str(r["subject_id"]),
            policy_text,
            f"{s['usd_today']:.4f}",
            f"{s['tokens_today']:,}",
            f"{s['usd_this_month']:.4f}",
            f"{s['tokens_this_month']:,}",
        )
    out.print(table)

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

from forebay.cli.common import (
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    fail,
    id_column,
    note,
    open_store,
    out,
    print_json,
)
from forebay.state.policy import LimitPolicy

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

    store = PolicyStore(open_store(config, data_dir).engine)
    try:
        subject_id, _ = store.resolve(scope, ref)  # type: ignore[arg-type]
    except TenancyError as exc:
        raise fail(str(exc)) from None
    return store, subject_id


def _budget(text: str | None, flag: str) -> dict[str, float | None] | None:
    """The whole budget as given: a part left out is removed (HARD alone drops SOFT)."""
    if text is None:
        return None
    hard, _, soft = text.partition("/")
    try:
        out = {"hard": float(hard) if hard else None, "soft": float(soft) if soft else None}
    except ValueError:
        raise fail(
            f"{flag} takes HARD or HARD/SOFT numbers, e.g. 100/80; got {text!r}", 2
        ) from None
    return out


LIMIT_NAMES = tuple(LimitPolicy.model_fields)


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
    unset: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Remove this limit, e.g. --unset rpm (repeat, or rpm,tpm)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Remove every limit not given here.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Change the limits of a tenant or key: only the limits given change (each is
    set to what you give), --unset removes one, --replace removes all others."""
    scope, ref = _scope(tenant, key)
    patch: dict[str, Any] = {"rpm": rpm, "tpm": tpm, "concurrent": concurrent}
    for name, text in [
        ("usd_per_day", usd_per_day),
        ("usd_per_month", usd_per_month),
        ("tokens_per_day", tokens_per_day),
        ("tokens_per_month", tokens_per_month),
    ]:
        patch[name] = _budget(text, "--" + name.replace("_", "-"))
    patch = {k: v for k, v in patch.items() if v is not None}
    removed = _unset_names(unset or [])
    if both := sorted(removed & patch.keys()):
        raise fail(f"--{both[0].replace('_', '-')} is both given and unset", 2)
    if not patch and not removed and not replace:
        raise fail("nothing to change: give a limit (e.g. --rpm 600), --unset or --replace", 2)
    store, subject_id = _subject(config, data_dir, scope, ref)
    try:
        if replace:
            policy = LimitPolicy.model_validate(patch)
            store.set(scope, subject_id, policy)  # type: ignore[arg-type]
        else:
            policy = store.update(scope, subject_id, {**patch, **dict.fromkeys(removed)})  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "limits"
        raise fail(f"{where}: {first['msg']}", 2) from None
    out.print(f"{scope} {subject_id}: {policy.model_dump(exclude_none=True)}", highlight=False)


def _unset_names(values: list[str]) -> set[str]:
    names = {v.strip().lstrip("-").replace("-", "_") for part in values for v in part.split(",")}
    names.discard("")
    unknown = sorted(names - set(LIMIT_NAMES))
    if unknown:
        known = ", ".join(n.replace("_", "-") for n in LIMIT_NAMES)
        raise fail(f"--unset: unknown limit {unknown[0]!r}; the limits are: {known}", 2)
    return names


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

    opened = open_store(config, data_dir)
    store = PolicyStore(opened.engine)
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
    elif rows:
        table = Table(
            "scope", id_column(), "limits", "$ today", "tokens today", "$ month", "tokens month"
        )
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
    if not rows:
        note(f"no limits are set in {opened.where}; set some with `forebay limits set`")

"""`forebay keys`: create, list and revoke API keys."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.table import Table

from forebay.cli.common import (
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    err,
    fail,
    load_or_exit,
    open_tenancy,
    out,
    print_json,
    when,
)

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id or name.")],
    models: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Comma-separated model aliases the key may use; all when omitted."),
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    classes: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Comma-separated traffic classes the key may use; all when omitted."),
    ] = None,
    default_class: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Class of requests without x-forebay-class."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key for a tenant. The key is printed once and stored only as a hash."""
    from forebay.errors import TenancyError

    store, _ = open_tenancy(config, data_dir)
    scope = [m.strip() for m in models.split(",") if m.strip()] if models else None
    allowed = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    known = set(load_or_exit(config, data_dir).classes)
    for c in [*(allowed or []), *([default_class] if default_class else [])]:
        if c not in known:
            err.print(f"[red]error:[/red] unknown class {c!r}; known: {', '.join(sorted(known))}")
            raise typer.Exit(2)
    try:
        issued = store.create_key(
            tenant, models=scope, name=name, classes=allowed, default_class=default_class
        )
    except TenancyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"id:  {issued.info.id}\nkey: {issued.key}", highlight=False)
    err.print("This key is shown once; store it now.")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant.")] = None,  # noqa: UP045
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (never the keys themselves: id, prefix, tenant, scope, state)."""
    from forebay.errors import TenancyError

    store, _ = open_tenancy(config, data_dir)
    try:
        keys = store.list_keys(tenant=tenant)
    except TenancyError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print_json([asdict(k) for k in keys])
        return
    table = Table("id", "prefix", "tenant", "models", "admin", "created", "state")
    for k in keys:
        table.add_row(
            k.id,
            k.prefix + "…",
            k.tenant_name or "-",
            ",".join(k.models) if k.models else "all",
            "yes" if k.is_admin else "",
            when(k.created_at),
            "revoked" if k.revoked_at else "active",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `forebay keys list`).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key; running servers stop accepting it within key_refresh_s."""
    from forebay.errors import TenancyError

    store, _ = open_tenancy(config, data_dir)
    try:
        revoked = store.revoke_key(key_id)
    except TenancyError as exc:
        raise fail(str(exc), 2) from None
    if not revoked:
        err.print(f"[red]error:[/red] no active key with id {key_id}")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")

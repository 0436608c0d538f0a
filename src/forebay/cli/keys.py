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
    id_column,
    note,
    open_tenancy,
    out,
    print_json,
    when,
)
from forebay.errors import TenancyError

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
    from forebay.tenancy.scope import check_key_scope

    store, opened = open_tenancy(config, data_dir)
    settings = opened.settings
    try:
        scope = check_key_scope(
            _split(models),
            _split(classes),
            default_class,
            known_models=settings.models,
            known_classes=settings.classes,
            gateway_default=settings.admission.default_class,
        )
    except TenancyError as exc:
        raise fail(f"{exc} (config {settings.source})", 2) from None
    try:
        issued = store.create_key(
            tenant,
            models=scope.models,
            name=name,
            classes=scope.classes,
            default_class=scope.default_class,
        )
    except TenancyError as exc:
        raise fail(str(exc)) from None
    out.print(f"id:  {issued.info.id}\nkey: {issued.key}", highlight=False)
    err.print(f"This key is shown once; store it now. (in {opened.where})", highlight=False)


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@keys_app.command("list")
def keys_list(
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant.")] = None,  # noqa: UP045
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (never the keys themselves: id, prefix, tenant, scope, state)."""
    store, opened = open_tenancy(config, data_dir)
    try:
        keys = store.list_keys(tenant=tenant)
    except TenancyError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print_json([asdict(k) for k in keys])
    elif keys:
        table = Table(id_column(), "prefix", "tenant", "models", "admin", "created", "state")
        for k in keys:
            table.add_row(
                k.id,
                k.prefix + "…",
                k.tenant_name or "-",
                ",".join(k.models) if k.models is not None else "all",
                "yes" if k.is_admin else "",
                when(k.created_at),
                "revoked" if k.revoked_at else "active",
            )
        out.print(table)
    if not keys:
        whose = f" of tenant {tenant!r}" if tenant else ""
        note(f"no keys{whose} in {opened.where}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `forebay keys list`).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key; running servers stop accepting it within key_refresh_s."""
    store, opened = open_tenancy(config, data_dir)
    try:
        revoked = store.revoke_key(key_id)
    except TenancyError as exc:
        raise fail(str(exc), 2) from None
    if not revoked:
        raise fail(f"no active key with id {key_id} in {opened.where}")
    out.print(f"revoked {key_id}")

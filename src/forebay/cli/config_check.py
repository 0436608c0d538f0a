"""`forebay config check`: validate a forebay.yaml, and with --probe try each
remote deployment and say what is wrong with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from forebay.cli.common import load_or_exit, out, print_notices
from forebay.config.notices import served_models

if TYPE_CHECKING:
    from forebay.config.settings import Deployment, Settings
    from forebay.upstreams.probe import ProbeResult

config_app = typer.Typer(help="Check a forebay.yaml.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="The forebay.yaml to check.")],
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Also contact each remote deployment (GET its model list with its "
            "credentials) and say what is wrong; without it nothing is contacted.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds allowed per deployment.")
    ] = 5.0,
) -> None:
    """Validate a config file; errors name the field and its line."""
    settings = load_or_exit(path, None)
    deployments = sum(len(m.deployments) for m in settings.models.values())
    out.print(
        f"ok: {len(settings.models)} models, {deployments} deployments, "
        f"revision {settings.revision}"
    )
    out.print(served_models(settings), highlight=False, soft_wrap=True)
    print_notices(settings)
    if probe and not _probe_all(settings, timeout):
        raise typer.Exit(1)


def _probe_all(settings: Settings, timeout_s: float) -> bool:
    """Print one line per deployment; True when every remote one answered well."""
    from forebay.gateway.failures import parse_upstream_error
    from forebay.gateway.redact import Redactor
    from forebay.upstreams.registry import remote_upstream

    deps = [d for m in settings.models.values() for d in m.deployments]
    remote = [d for d in deps if d.provider != "local" and d.base_url]

    async def one(dep: Deployment) -> ProbeResult:
        # The adapter knows where its provider lists models and how it authenticates.
        upstream = remote_upstream(dep)
        try:
            return await upstream.probe(timeout_s)
        finally:
            await upstream.close()

    async def run() -> list[ProbeResult]:
        return list(await asyncio.gather(*(one(d) for d in remote)))

    results = asyncio.run(run()) if remote else []
    redactor = Redactor.for_deployments(deps)
    width = max((len(d.name) for d in deps), default=0)
    for dep in deps:
        if dep not in remote:
            line = f"  {'skipped':<16} {dep.name:<{width}}  local worker, started by serve"
            out.print(line, highlight=False, markup=False)
    for dep, result in zip(remote, results, strict=True):
        detail = result.detail
        if result.body:
            reason = parse_upstream_error(redactor.redact(result.body)).message
            if reason:
                detail += f" ({redactor.redact_text(reason)[:200]})"
        mark = "ok" if result.ok else "FAIL " + result.verdict
        out.print(
            f"  {mark:<16} {dep.name:<{width}}  {redactor.redact_text(detail)}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    failed = sum(not r.ok for r in results)
    if failed:
        out.print(f"{failed} of {len(results)} deployments failed the probe")
    return failed == 0

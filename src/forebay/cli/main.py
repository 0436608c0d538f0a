"""The `forebay` command: every command group registered on one typer app."""

from __future__ import annotations

import typer

from forebay.cli.config_check import config_app
from forebay.cli.keys import keys_app
from forebay.cli.limits import limits_app
from forebay.cli.plan import app as plan_app
from forebay.cli.serve import serve
from forebay.cli.sim import sim
from forebay.cli.tenants import tenants_app
from forebay.cli.usage import usage

app = typer.Typer(
    name="forebay",
    help="A shared, metered, OpenAI-compatible inference plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.command()(usage)
app.add_typer(limits_app, name="limits")
app.add_typer(config_app, name="config")
app.add_typer(plan_app, name="plan")
app.command("sim")(sim)


def main() -> None:
    app(prog_name="forebay")


if __name__ == "__main__":
    main()

"""One deployment built the way `forebay serve` builds it: from YAML through
the schema and the loader, so adapter tests exercise the config path too."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from forebay.config.load import load_settings
from forebay.config.settings import Deployment

_count = itertools.count()


def deployment(spec: str, *, environ: dict[str, str] | None = None) -> Deployment:
    """`spec` is the deployment's flow mapping body, e.g. "provider: anthropic, model: m"."""
    directory = Path(tempfile.mkdtemp(prefix="forebay-dep-"))
    path = directory / "forebay.yaml"
    name = f"dep-{next(_count)}"
    path.write_text(f"models:\n  m:\n    deployments:\n      - {{name: {name}, {spec}}}\n")
    settings = load_settings(path, data_dir=directory / "data", environ=environ or {})
    (dep,) = settings.models["m"].deployments
    return dep

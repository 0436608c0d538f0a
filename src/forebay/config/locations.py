"""Where the config file and the data directory are: one order of precedence for
every command (`serve` and each CLI command), so that two commands run the same
way always act on the same store.

Config file: `--config`, then `FOREBAY_CONFIG`, then the built-in default.
Data directory: `--data-dir`, then `FOREBAY_DATA_DIR`, then the config file's
`data_dir` (relative to the file), then `$XDG_DATA_HOME/forebay`
(`~/.local/share/forebay`).

`forebay serve` also notes each data directory it serves from in a small file
under `$XDG_STATE_HOME/forebay` (`~/.local/state/forebay`), so that a command
that finds no store can say where a server was last started instead."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

CONFIG_ENV = "FOREBAY_CONFIG"
DATA_DIR_ENV = "FOREBAY_DATA_DIR"
_RECENT_FILE = "recent-serves.json"
_RECENT_MAX = 8


@dataclass(frozen=True, slots=True)
class Choice:
    """A resolved location and what chose it (a flag, a variable, a file, the default)."""

    path: Path | None
    origin: str


def choose_config(flag: Path | None, env: Mapping[str, str]) -> Choice:
    if flag is not None:
        return Choice(flag, "from --config")
    if env.get(CONFIG_ENV):
        return Choice(Path(env[CONFIG_ENV]), f"from {CONFIG_ENV}")
    return Choice(None, f"no --config or {CONFIG_ENV}")


def choose_data_dir(
    flag: Path | None,
    env: Mapping[str, str],
    configured: str | None,
    config_path: Path | None,
) -> Choice:
    """The data directory, made absolute (so every process agrees on it)."""
    if flag is not None:
        return Choice(_absolute(flag), "--data-dir")
    if env.get(DATA_DIR_ENV):
        return Choice(_absolute(Path(env[DATA_DIR_ENV])), DATA_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_absolute() and config_path is not None:
            path = config_path.resolve().parent / path
        return Choice(_absolute(path), f"data_dir in {config_path}")
    return Choice(
        _absolute(default_data_dir(env)),
        f"the default: no --data-dir, {DATA_DIR_ENV} or data_dir in the config",
    )


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "forebay"


def _absolute(path: Path) -> Path:
    return path.expanduser().resolve()


@dataclass(frozen=True, slots=True)
class RecentServe:
    data_dir: Path
    origin: str
    config: str
    pid: int
    started_at: float

    @property
    def running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _recent_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "forebay" / _RECENT_FILE


def recent_serves(env: Mapping[str, str] | None = None) -> list[RecentServe]:
    """Data directories `forebay serve` was started with, newest first."""
    try:
        rows = orjson.loads(_recent_path(os.environ if env is None else env).read_bytes())
        return [
            RecentServe(
                Path(r["data_dir"]), r["origin"], r["config"], int(r["pid"]), r["started_at"]
            )
            for r in rows
        ]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def remember_serve(data_dir: Choice, config: str, env: Mapping[str, str] | None = None) -> None:
    """Note a server's data directory; best effort (a read-only home must not stop it)."""
    env = os.environ if env is None else env
    assert data_dir.path is not None
    entry = RecentServe(data_dir.path, data_dir.origin, config, os.getpid(), time.time())
    kept = [r for r in recent_serves(env) if r.data_dir != entry.data_dir]
    rows = [
        {
            "data_dir": str(r.data_dir),
            "origin": r.origin,
            "config": r.config,
            "pid": r.pid,
            "started_at": r.started_at,
        }
        for r in [entry, *kept][:_RECENT_MAX]
    ]
    path = _recent_path(env)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(rows))
        tmp.replace(path)

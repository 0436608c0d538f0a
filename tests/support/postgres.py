"""A throwaway PostgreSQL cluster on loopback, owned by the test session that starts it.

Missing binaries fail the run (CI installs them with scripts/ensure-services.sh);
the PostgreSQL ledger must never go untested because the server was absent.

PostgreSQL refuses to run as root, so under root the cluster runs as an
unprivileged system user (`postgres` where the distribution created it). Its
data and socket directories live in a private temporary directory that user
owns. Durability is switched off (`fsync=off`): tests want speed, not crash
safety. Each test gets a fresh, empty database from `fresh_database()`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.servers import free_port

SUPERUSER = "forebay"
# Tests want speed, not crash safety; a benchmark passes its own settings.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_bindir() -> Path:
    """The directory holding initdb and postgres, newest major version first."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, postgres) are not installed; "
            "run scripts/ensure-services.sh (CI does), or apt-get install postgresql"
        )
    return candidates[-1].parent


def _service_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "forebay-pg"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "forebay-pg"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("forebay-pg")


class PostgresServer:
    def __init__(self, port: int | None = None, *, settings: tuple[str, ...] = FAST) -> None:
        self.bindir = find_bindir()
        self.settings = settings
        self.port = port or free_port()
        self.user = _service_user()
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database (TCP on loopback, trust authentication)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq connection string, for psycopg directly."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        """user, group and extra_groups for subprocess: the service user's, if any."""
        if self.user is None:
            return None, None, None
        return self.user.pw_uid, self.user.pw_gid, []

    def start(self) -> PostgresServer:
        # Not under pytest's tmp dirs: those are private to root (mode 0700).
        self.root = Path(tempfile.mkdtemp(prefix="forebay-pg-"))
        data, sockets, log = self.root / "data", self.root / "run", self.root / "server.log"
        sockets.mkdir()
        if self.user is not None:
            for path in (self.root, sockets):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        uid, gid, groups = self._ids()
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        if self.user is not None:
            env["HOME"] = str(self.root)
        initdb = [str(self.bindir / "initdb"), "-D", str(data), "-U", SUPERUSER]
        initdb += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"]
        initdb += ["--no-instructions"]
        init = subprocess.run(
            initdb,
            capture_output=True,
            env=env,
            cwd=self.root,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout.decode()}\n{init.stderr.decode()}")
        args = [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}"]
        args += ["-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        for setting in self.settings:
            args += ["-c", setting]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{log.read_text()}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=1):
                    return self
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections on port {self.port}")

    def fresh_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._databases += 1
        name = name or f"t{os.getpid()}_{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

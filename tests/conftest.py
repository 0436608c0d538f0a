"""Fixtures that start real servers on loopback: the test upstream and gateways."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from forebay.api.server import bind_listeners
from forebay.app import Services, build_services, served_app
from forebay.config.load import load_settings
from tests.support.ledger import read_ledger, wait_for_rows
from tests.support.openai_server import FakeUpstream
from tests.support.postgres import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerThread

ADMIN_KEY = "sk-fb-test-admin-0123456789abcdef0123456789abcdef"


@dataclass
class Upstream:
    fake: FakeUpstream
    server: ServerThread

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    fake = FakeUpstream()
    with ServerThread(fake.app()) as server:
        yield Upstream(fake, server)


@dataclass
class Gateway:
    services: Services
    server: ServerThread
    data_dir: Path
    tenant_key: str
    admin_key: str = ADMIN_KEY
    metrics_port: int | None = None  # server.metrics_listen, when configured

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    def stop(self) -> None:
        self.server.stop()

    def ledger_rows(self) -> list[dict[str, object]]:
        """Every usage record, read straight from the database file."""
        return read_ledger(f"sqlite:///{self.data_dir / 'forebay.db'}")

    def wait_rows(self, count: int, timeout: float = 10) -> list[dict[str, object]]:
        """The ledger once it holds at least `count` rows (the writer batches)."""
        return wait_for_rows(self.ledger_rows, count, timeout, interval=0.05)

    def row_for(self, request_id: str, timeout: float = 10) -> dict[str, object]:
        """The ledger row of one request, once written."""
        deadline = time.monotonic() + timeout
        while True:
            for row in self.ledger_rows():
                if row["request_id"] == request_id:
                    return row
            if time.monotonic() > deadline:
                raise AssertionError(f"no ledger row for {request_id}")
            time.sleep(0.05)


GatewayFactory = Callable[..., Gateway]


def start_gateway(
    config_yaml: str | None, *, workdir: Path, data_dir: Path | None = None
) -> Gateway:
    """Start an in-process gateway (its own uvicorn thread) from YAML text."""
    path = None
    if config_yaml is not None:
        path = workdir / f"forebay-{len(list(workdir.glob('forebay-*.yaml')))}.yaml"
        path.write_text(textwrap.dedent(config_yaml))
    directory = data_dir or workdir / "data"
    settings = load_settings(path, data_dir=directory)
    services = build_services(settings, env_admin_key=ADMIN_KEY)
    tenant_key = services.bootstrapped.tenant_key or ""
    listeners = bind_listeners("127.0.0.1", 0, settings.server)
    app = served_app(services, listeners.metrics_port)
    server = ServerThread(app, server=settings.server, listeners=listeners).start()
    return Gateway(services, server, directory, tenant_key, metrics_port=listeners.metrics_port)


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start gateways from YAML text; all are stopped when the test ends."""
    started: list[Gateway] = []

    def factory(config_yaml: str | None, *, data_dir: Path | None = None) -> Gateway:
        gw = start_gateway(config_yaml, workdir=tmp_path, data_dir=data_dir)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        gw.stop()


def echo_config(base_url: str, **extra: str) -> str:
    """One alias `echo` (and friends) served by the test upstream."""
    return f"""
    key_refresh_s: 0.2
    ledger:
      flush_interval_s: 0.05
    models:
      echo:
        deployments:
          - name: fake-echo
            base_url: {base_url}
            model: echo
            api_key: sk-upstream-secret-DO-NOT-LEAK
            price: {{input_per_million: 1.0, output_per_million: 2.0}}
            energy: {{joules_per_input_token: 0.5, joules_per_output_token: 2.0}}
      nousage:
        deployments:
          - name: fake-nousage
            base_url: {base_url}
            model: no-usage
      embed:
        kind: embedding
        deployments:
          - name: fake-embed
            base_url: {base_url}
            model: echo
            price: {{input_per_million: 0.1}}
    """


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway Redis for the session; tests use distinct keys or flush it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (fails, never skips, without binaries)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL, as a SQLAlchemy URL
    (`postgresql+psycopg://...`, TCP on loopback): put it in `database: {url: ...}`."""
    return postgres_server.fresh_database()


@pytest.fixture
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """openai.OpenAI clients that are closed when the test ends (an unclosed
    client leaves keep-alive sockets for the garbage collector to complain about)."""
    clients: list[openai.OpenAI] = []

    def make(**kwargs: object) -> openai.OpenAI:
        client = openai.OpenAI(**kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    """An HTTP client holding the admin key, for the `gw` fixture of the test's module."""
    headers = {"authorization": f"Bearer {gw.admin_key}"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=10) as client:
        yield client

"""`forebay serve --workers N`: several processes on one port, which needs
shared counters, so it refuses to start without Redis."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY, Upstream
from tests.support.process import ServeProcess, forebay
from tests.support.redis_server import RedisServer


def _config(tmp_path: Path, upstream: Upstream, redis_url: str | None) -> Path:
    path = tmp_path / "forebay.yaml"
    redis = f'redis: {{url: "{redis_url}"}}\n' if redis_url else ""
    path.write_text(
        redis
        + f"""key_refresh_s: 0.3
models:
  echo:
    deployments:
      - {{name: fake, base_url: "{upstream.base_url}", model: echo}}
"""
    )
    return path


def test_workers_without_redis_refuse_to_start(tmp_path: Path, upstream: Upstream) -> None:
    config = _config(tmp_path, upstream, None)
    result = forebay(
        "serve", "--workers", "2", "--config", str(config), "--data-dir", str(tmp_path / "d")
    )
    assert result.returncode == 2
    assert "--workers 2 needs Redis" in result.stderr and "redis.url" in result.stderr


def test_two_workers_make_keys_once_and_share_limits(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    config = _config(tmp_path, upstream, redis_server.url)
    log = tmp_path / "serve.log"
    gw = ServeProcess(
        "--workers",
        "2",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path / "d"),
        log=log,
        env={"FOREBAY_ADMIN_KEY": ADMIN_KEY},
    )
    try:
        gw.start()
        assert not re.findall(r"sk-fb-[A-Za-z0-9_-]{20,}", log.read_text())  # not a terminal
        saved = (tmp_path / "d" / "first-start-keys.txt").read_text()
        (key,) = re.findall(r"sk-fb-[A-Za-z0-9_-]{20,}", saved)  # made once, by the parent
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        resp = httpx.put(f"{gw.url}/admin/limits/tenant/default", json={"rpm": 10}, headers=admin)
        assert resp.status_code == 200
        time.sleep(1.0)  # the other worker reads policies from the database every 0.3 s
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        statuses = []
        for _ in range(30):
            with httpx.Client() as http:  # a new connection each time: both workers answer
                r = http.post(
                    f"{gw.url}/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                )
            statuses.append(r.status_code)
        # Whichever worker takes a connection, the limit is one shared count (Redis).
        assert statuses.count(200) == 10 and statuses.count(429) == 20
    finally:
        gw.kill()

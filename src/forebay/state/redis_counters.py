"""The counter model in Redis, shared by every gateway replica.

Each reservation and each settlement is one EVALSHA round trip running a Lua
script, so checking every counter and adding to all of them is atomic across
replicas: no read-then-write race can let two replicas both take the last
unit. Keys carry a hash tag, so a request's counters stay in one Redis Cluster
slot.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, NoScriptError, RedisError

from forebay.state.counters import WINDOW_S, Adjustment, Check, Outcome

_KIND = {"window": "w", "lease": "l", "total": "t"}

# KEYS: one counter per check. ARGV: now, token, then 5 per check: kind, limit
# (negative: none), amount, ttl, seed. A total is a hash {v: value, g: epoch}; a missing
# one starts from its seed. Returns {denied (0: none, else 1-based), used..., wait...,
# epoch...} as strings, because Redis truncates Lua numbers to integers.
RESERVE = f"""
local now = tonumber(ARGV[1])
local token = ARGV[2]
local sec = math.floor(now)
local n = #KEYS
local used, wait, epoch = {{}}, {{}}, {{}}
local denied = 0
for i = 1, n do
  local a = 2 + (i - 1) * 5
  local kind, limit, amount = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local ttl = tonumber(ARGV[a + 4])
  local key = KEYS[i]
  local u, w = 0, 0
  epoch[i] = ''
  if kind == 'w' then
    local h = redis.call('HGETALL', key)
    local oldest = nil
    for j = 1, #h, 2 do
      local b = tonumber(h[j])
      if b <= sec - {WINDOW_S} then
        redis.call('HDEL', key, h[j])
      else
        u = u + tonumber(h[j + 1])
        if oldest == nil or b < oldest then oldest = b end
      end
    end
    if oldest then w = oldest + {WINDOW_S} - now end
  elseif kind == 'l' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    u = redis.call('ZCARD', key)
    if u > 0 then w = 1 end
  else
    local t = redis.call('HMGET', key, 'v', 'g')
    if t[1] then
      u, epoch[i] = tonumber(t[1]), t[2]
    else
      u = tonumber(ARGV[a + 5])
    end
    w = ttl
  end
  if limit >= 0 and u + amount > limit and denied == 0 then denied = i end
  used[i], wait[i] = u, w
end
if denied == 0 then
  for i = 1, n do
    local a = 2 + (i - 1) * 5
    local kind, amount, ttl = ARGV[a + 1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local key = KEYS[i]
    if kind == 'w' then
      redis.call('HINCRBYFLOAT', key, sec, amount)
      redis.call('EXPIRE', key, {WINDOW_S + 1})
    elseif kind == 'l' then
      if amount > 0 then
        redis.call('ZADD', key, now + ttl, token)
        redis.call('EXPIRE', key, math.ceil(ttl) + 1)
      end
    else
      if epoch[i] == '' then
        epoch[i] = token
        redis.call('HSET', key, 'v', ARGV[a + 5], 'g', token)
        redis.call('EXPIRE', key, math.ceil(ttl))
      end
      redis.call('HINCRBYFLOAT', key, 'v', ARGV[a + 3])
    end
    used[i] = used[i] + amount
  end
end
local out = {{tostring(denied)}}
for i = 1, n do out[#out + 1] = tostring(used[i]) end
for i = 1, n do out[#out + 1] = tostring(wait[i]) end
if denied == 0 then
  for i = 1, n do out[#out + 1] = epoch[i] end
end
return out
"""

# KEYS: one counter per adjustment. ARGV: token, then 5 per adjustment: kind, delta,
# bucket, actual, epoch. A total that is not the epoch reserved in gets `actual`.
SETTLE = """
local token = ARGV[1]
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 5
  local kind, delta, bucket = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local key = KEYS[i]
  if kind == 'w' then
    if delta ~= 0 and redis.call('HEXISTS', key, bucket) == 1 then
      redis.call('HINCRBYFLOAT', key, bucket, delta)
    end
  elseif kind == 'l' then
    redis.call('ZREM', key, token)
  else
    local epoch = redis.call('HGET', key, 'g')
    if epoch then
      local change = ARGV[a + 2]
      if epoch ~= ARGV[a + 5] then change = ARGV[a + 4] end
      if tonumber(change) ~= 0 then redis.call('HINCRBYFLOAT', key, 'v', change) end
    end
  end
end
return 1
"""


class RedisCounters:
    """Scripts are sent as EVALSHA. Calls made in the same event-loop turn are
    sent together in one pipeline (each script still runs atomically on its
    own), so under load many requests share one round trip and the client's
    per-command overhead, while a lone request waits for nobody."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._scripts = {name: (text, _sha(text)) for name, text in _SCRIPTS.items()}
        self._pending: list[tuple[str, list[str], list[str], asyncio.Future[Any]]] = []

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float) -> RedisCounters:
        # After Redis restarts, every pooled connection is dead, and the first command on
        # each fails. A retry on the same connection, reconnected, hides that (the new
        # server never ran the first try); a second, 10-20 ms later, covers a reconnect
        # that lost the race with a burst on a loaded machine (seen in CI). Only
        # connection errors: a Redis that does not answer in time must fail over at
        # once, not after several timeouts.
        once = Retry(
            ExponentialBackoff(cap=0.05, base=0.01), 2, supported_errors=(ConnectionError,)
        )
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            max_connections=512,
            retry=once,
        )
        return cls(client)

    def _call(self, script: str, keys: list[str], args: list[str]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush_soon)
        self._pending.append((script, keys, args, future))
        return future

    def _flush_soon(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        task.add_done_callback(_consume)

    async def _flush(
        self, batch: list[tuple[str, list[str], list[str], asyncio.Future[Any]]]
    ) -> None:
        try:
            results = await self._run(batch)
        except BaseException as exc:  # the connection failed: every caller sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RedisError(str(exc))
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run(
        self, batch: list[tuple[str, list[str], list[str], asyncio.Future[Any]]]
    ) -> list[Any]:
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            return [await self._evalsha(script, keys, args)]
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", self._scripts[script][1], len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        for i in missing:  # Redis restarted and lost its script cache
            script, keys, args, _ = batch[i]
            results[i] = await self._evalsha(script, keys, args)
        return results

    async def _evalsha(self, script: str, keys: list[str], args: list[str]) -> Any:
        text, sha = self._scripts[script]
        # execute_command, not evalsha(): it skips a deprecation-check wrapper per call.
        run = self._redis.execute_command
        try:
            return await run("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            await self._redis.script_load(text)
            return await run("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]

    async def reserve(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome:
        args = [repr(now), token]
        for c in checks:
            limit = -1.0 if c.limit is None else c.limit
            args += [
                _KIND[c.kind],
                repr(float(limit)),
                repr(float(c.amount)),
                repr(c.ttl_s),
                repr(float(c.seed)),
            ]
        raw = await self._call("reserve", [c.key for c in checks], args)
        n = len(checks)
        denied = int(raw[0])
        used = tuple(float(x) for x in raw[1 : 1 + n])
        wait = tuple(float(x) for x in raw[1 + n : 1 + 2 * n])
        if denied:
            return Outcome(denied - 1, used, wait)
        return Outcome(None, used, wait, tuple(x.decode() for x in raw[1 + 2 * n :]))

    async def settle(self, adjustments: Sequence[Adjustment], *, token: str) -> None:
        args = [token]
        for adj in adjustments:
            args += [
                _KIND[adj.kind],
                repr(float(adj.delta)),
                str(adj.bucket),
                repr(float(adj.actual)),
                adj.epoch,
            ]
        await self._call("settle", [a.key for a in adjustments], args)

    async def close(self) -> None:
        await self._redis.aclose()


_SCRIPTS = {"reserve": RESERVE, "settle": SETTLE}


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # already delivered to the callers' futures

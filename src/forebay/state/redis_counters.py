"""The counter model in Redis, shared by every gateway replica.

Each reservation and each settlement is one EVALSHA round trip running a Lua
script, so checking every counter and adding to all of them is atomic across
replicas: no read-then-write race can let two replicas both take the last
unit. Keys carry a hash tag, so a request's counters stay in one Redis Cluster
slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from forebay.state.counters import WINDOW_S, Adjustment, Check, Outcome

_KIND = {"window": "w", "lease": "l", "total": "t"}

# KEYS: one counter per check. ARGV: now, token, then 4 per check: kind, limit
# (negative: none), amount, ttl. Returns {denied (0: none, else 1-based), used..., wait...}
# as strings, because Redis truncates Lua numbers to integers.
RESERVE = f"""
local now = tonumber(ARGV[1])
local token = ARGV[2]
local sec = math.floor(now)
local n = #KEYS
local used, wait = {{}}, {{}}
local denied = 0
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local kind, limit, amount = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local ttl = tonumber(ARGV[a + 4])
  local key = KEYS[i]
  local u, w = 0, 0
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
    u = tonumber(redis.call('GET', key) or '0')
    w = ttl
  end
  if limit >= 0 and u + amount > limit and denied == 0 then denied = i end
  used[i], wait[i] = u, w
end
if denied == 0 then
  for i = 1, n do
    local a = 2 + (i - 1) * 4
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
      redis.call('INCRBYFLOAT', key, amount)
      if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, math.ceil(ttl)) end
    end
    used[i] = used[i] + amount
  end
end
local out = {{tostring(denied)}}
for i = 1, n do out[#out + 1] = tostring(used[i]) end
for i = 1, n do out[#out + 1] = tostring(wait[i]) end
return out
"""

# KEYS: one counter per adjustment. ARGV: token, then 3 per adjustment: kind, delta, bucket.
SETTLE = """
local token = ARGV[1]
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 3
  local kind, delta, bucket = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local key = KEYS[i]
  if kind == 'w' then
    if delta ~= 0 and redis.call('HEXISTS', key, bucket) == 1 then
      redis.call('HINCRBYFLOAT', key, bucket, delta)
    end
  elseif kind == 'l' then
    redis.call('ZREM', key, token)
  elseif delta ~= 0 and redis.call('EXISTS', key) == 1 then
    redis.call('INCRBYFLOAT', key, delta)
  end
end
return 1
"""

SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


class RedisCounters:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._seed = client.register_script(SEED)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float) -> RedisCounters:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            max_connections=512,
        )
        return cls(client)

    async def reserve(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome:
        args: list[str | float] = [repr(now), token]
        for c in checks:
            limit = -1.0 if c.limit is None else c.limit
            args += [_KIND[c.kind], repr(float(limit)), repr(float(c.amount)), repr(c.ttl_s)]
        raw = await self._reserve(keys=[c.key for c in checks], args=args)
        n = len(checks)
        denied = int(raw[0])
        used = tuple(float(x) for x in raw[1 : 1 + n])
        wait = tuple(float(x) for x in raw[1 + n : 1 + 2 * n])
        return Outcome(denied - 1 if denied else None, used, wait)

    async def settle(self, adjustments: Sequence[Adjustment], *, token: str) -> None:
        args: list[str | float] = [token]
        for adj in adjustments:
            args += [_KIND[adj.kind], repr(float(adj.delta)), str(adj.bucket)]
        await self._settle(keys=[a.key for a in adjustments], args=args)

    async def seed(self, key: str, value: float, *, now: float, ttl_s: float) -> None:
        await self._seed(keys=[key], args=[repr(float(value)), str(max(1, int(ttl_s)))])

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

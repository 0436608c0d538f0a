"""An opened upstream stream: its bytes relayed as they arrive, each wait for
the next chunk bounded by the deployment's idle timeout, and its connection
closed (not pooled) when it is abandoned half-way. Shared by every HTTP adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from forebay.errors import UpstreamFailure
from forebay.upstreams.transport import TRANSPORT_ERRORS, transport_failure


class HttpStream:
    def __init__(self, resp: aiohttp.ClientResponse, idle_s: float) -> None:
        self._resp = resp
        self._idle_s = idle_s

    async def chunks(self) -> AsyncIterator[bytes]:
        # aiohttp's own sock_read timeout misses some broken streams (a bad
        # chunk-size line after the first chunk hangs the read for ever), so
        # an idle watch of our own bounds every wait for the next chunk.
        content = self._resp.content
        watch = _IdleWatch(self._idle_s)
        try:
            while True:
                watch.waiting()
                chunk = await content.readany()
                watch.got()
                if not chunk:
                    return
                yield chunk
        except asyncio.CancelledError:
            if watch.fired():
                raise UpstreamFailure(
                    "timeout", f"the stream was idle for {self._idle_s:.0f} s (timeout_s)"
                ) from None
            raise
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=True) from None
        finally:
            watch.stop()

    def release(self) -> None:
        # A stream abandoned half-way must close its connection, or the
        # upstream keeps generating tokens nobody will read.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class _IdleWatch:
    """Cancels the task waiting for a chunk once it has waited `idle_s`. One
    timer per stream, re-armed only when it fires, so a chunk costs two clock
    reads, not a timer."""

    def __init__(self, idle_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle_s = idle_s
        self._since: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._fired = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(idle_s, self._check)

    def waiting(self) -> None:
        self._since = self._loop.time()
        self._task = asyncio.current_task()  # the first chunk and the rest may differ

    def got(self) -> None:
        self._since = None

    def _check(self) -> None:
        since = self._since
        now = self._loop.time()
        if since is not None and now - since >= self._idle_s and self._task is not None:
            self._fired = True
            self._timer = None
            self._task.cancel()
            return
        start = since if since is not None else now
        self._timer = self._loop.call_at(start + self._idle_s, self._check)

    def fired(self) -> bool:
        """True (once) when our timer caused the cancellation being handled."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

"""The Anthropic, Gemini and Bedrock test servers side by side, for tests
that send one request shape to each provider and read what each received."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support import anthropic_server, bedrock_server, gemini_server
from tests.support.servers import ServerThread


class Fakes:
    def __init__(self) -> None:
        self.anthropic = anthropic_server.AnthropicServer()
        self.gemini = gemini_server.FakeGemini()
        self.bedrock = bedrock_server.FakeBedrock()
        self.urls: dict[str, str] = {}


@contextmanager
def running_fakes() -> Iterator[Fakes]:
    f = Fakes()
    apps = {"anthropic": f.anthropic.app(), "gemini": f.gemini.app(), "bedrock": f.bedrock.app()}
    threads = {name: ServerThread(app).start() for name, app in apps.items()}
    f.urls = {name: t.url for name, t in threads.items()}
    try:
        yield f
    finally:
        for t in threads.values():
            t.stop()

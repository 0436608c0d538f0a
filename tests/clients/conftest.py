"""Fixtures the coding-agent CLI tests share (tests/support/cli_clients.py):
the egress trap, and the Chat upstream whose scripted model follows the test
module's `workspace` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cli_clients import Workspace, serve
from tests.support.egress_trap import EgressTrap
from tests.support.openai_server import FakeUpstream
from tests.support.servers import ServerThread


@pytest.fixture
def trap() -> Iterator[EgressTrap]:
    with EgressTrap() as t:
        yield t


@pytest.fixture
def chat(workspace: Workspace) -> Iterator[tuple[FakeUpstream, ServerThread]]:
    with serve(FakeUpstream(script=workspace.script)) as served:
        yield served

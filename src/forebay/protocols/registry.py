"""The codec of each wire protocol, imported on first use: a gateway whose
requests never need translating never loads one."""

from __future__ import annotations

import importlib
from typing import cast

from forebay.protocols.canonical import Codec
from forebay.upstreams.base import WireProtocol

# One line per protocol: the module that defines its `CODEC`.
_MODULES: dict[WireProtocol, str] = {
    WireProtocol.OPENAI_CHAT: "forebay.protocols.openai_chat",
    WireProtocol.ANTHROPIC_MESSAGES: "forebay.protocols.anthropic_messages",
    WireProtocol.OPENAI_RESPONSES: "forebay.protocols.openai_responses",
    WireProtocol.GEMINI: "forebay.protocols.gemini",
    WireProtocol.BEDROCK_CONVERSE: "forebay.protocols.bedrock_converse",
}


class NoCodec(LookupError):
    """A protocol has no codec yet: requests in it cannot be translated."""


def codec_for(protocol: WireProtocol) -> Codec:
    module = _MODULES.get(protocol)
    if module is None:
        raise NoCodec(
            f"Forebay has no translator for the {protocol.value} protocol yet "
            "(protocols/registry.py lists those it has)."
        )
    # After the first call, import_module is a lookup in sys.modules.
    return cast(Codec, importlib.import_module(module).CODEC)

"""A loopback Bedrock runtime for tests, speaking Converse as AWS documents it:

  POST /model/{modelId}/converse          JSON reply
  POST /model/{modelId}/converse-stream   application/vnd.amazon.eventstream frames
  POST /model/{modelId}/count-tokens      CountTokens: {"inputTokens": N}, N the words
                                          of the converse input's texts (model
                                          `no-count`: 400, as for a model that cannot)

Every request must be signed with SigV4 (service bedrock, region REGION) by
ACCESS_KEY / SECRET_KEY (and SESSION_TOKEN, when `require_token`): the fake
recomputes the signature with botocore from the raw path, the signed headers
and the body, and answers 403 InvalidSignatureException when it differs (or
UnrecognizedClientException for an unknown key), as AWS does. A Bedrock API
key (`Authorization: Bearer BEARER_TOKEN`) is accepted too. Errors are an HTTP
status, `x-amzn-errortype` and `{"message": ...}`. A body field Converse does
not define, or no messages, gets 400 ValidationException.

Behaviour by model id (any suffix such as ":0" is ignored):
  echo         the last user text back; usage inputTokens = words, outputTokens
               = words, cacheReadInputTokens CACHE_READ, cacheWriteInputTokens
               CACHE_WRITE
  tool         reasoning (text + signature), then a toolUse of the first tool
               with input {"city": "Paris"}; stopReason tool_use; when the last
               user message is a toolResult, the text "the tool said <its
               text>" (so does echo)
  guardrail    stopReason guardrail_intervened, with the guardrail's text
  throttle     429 ThrottlingException        unavailable  503 ServiceUnavailableException
  not-ready    429 ModelNotReadyException     model-error  424 ModelErrorException
  missing      404 ResourceNotFoundException
  stream-throttle  one text delta, then a throttlingException event
  stream-garbled   one text delta, then a frame whose CRC is wrong
  stream-cut       one text delta, then half a frame and EOF
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.eventstream import event, exception, garbled

REGION = "us-west-2"
ACCESS_KEY = "AKIDEXAMPLEFOREBAY01"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FQoGZXIvYXdzEXAMPLETOKEN"
BEARER_TOKEN = "ABSKbedrock-test-api-key"
CACHE_READ = 100
CACHE_WRITE = 20
SIGNATURE = "EqoBCkgIARABGAIiQExAMPLESIG"
_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)


# ConverseTokensRequest's members.
_COUNTED = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeBedrock:
    require_token: bool = False
    seen: list[Seen] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/model/{model:str}/converse", self.converse, methods=["POST"]),
                Route("/model/{model:str}/converse-stream", self.converse, methods=["POST"]),
                Route("/model/{model:str}/count-tokens", self.count_tokens, methods=["POST"]),
            ]
        )

    async def converse(self, request: Request) -> Response:
        raw = await request.body()
        denied = self._auth(request, raw)
        if denied is not None:
            return denied
        body = orjson.loads(raw)
        self.seen.append(Seen(request.scope["raw_path"].decode(), dict(request.headers), body))
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            return _error(
                400, "ValidationException", f"extraneous key [{unknown[0]}] is not permitted"
            )
        if not body.get("messages"):
            return _error(
                400, "ValidationException", "A conversation must start with a user message."
            )
        roles = [m["role"] for m in body["messages"]]
        if roles[0] != "user" or any(a == b for a, b in itertools.pairwise(roles)):
            return _error(
                400,
                "ValidationException",
                "A conversation must alternate between user and assistant roles.",
            )
        model = request.path_params["model"].split(":")[0]
        failure = _failure(model)
        if failure is not None:
            return failure
        if request.url.path.endswith("/converse-stream"):
            return StreamingResponse(
                _stream(model, body), media_type="application/vnd.amazon.eventstream"
            )
        return _json(_reply(model, body))

    async def count_tokens(self, request: Request) -> Response:
        """CountTokens: `{"input": {"converse": ConverseTokensRequest}}` (or
        `invokeModel`, one of the two) -> `{"inputTokens": N}`, N the words of
        every text block of the messages and the system prompt."""
        raw = await request.body()
        denied = self._auth(request, raw)
        if denied is not None:
            return denied
        body = orjson.loads(raw)
        self.seen.append(Seen(request.scope["raw_path"].decode(), dict(request.headers), body))
        given = body.get("input") if isinstance(body, dict) else None
        if set(body) != {"input"} or not isinstance(given, dict) or len(given) != 1:
            return _error(400, "ValidationException", "input must set exactly one member.")
        converse = given.get("converse")
        if not isinstance(converse, dict):
            return _error(400, "ValidationException", "this fake counts converse input only")
        unknown = sorted(set(converse) - _COUNTED)
        if unknown:
            return _error(
                400, "ValidationException", f"extraneous key [{unknown[0]}] is not permitted"
            )
        model = request.path_params["model"].split(":")[0]
        if model == "no-count":
            return _error(
                400, "ValidationException", "The provided model doesn't support counting tokens."
            )
        failure = _failure(model)
        if failure is not None:
            return failure
        blocks = [b for m in converse.get("messages", []) for b in m.get("content", [])]
        blocks += converse.get("system", [])
        words = sum(len(str(b.get("text", "")).split()) for b in blocks)
        return _json({"inputTokens": words})

    def _auth(self, request: Request, raw: bytes) -> Response | None:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            if auth[7:] == BEARER_TOKEN:
                return None
            return _error(403, "AccessDeniedException", "Authentication failed: invalid API key.")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return _error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
        key, date, region, service, _ = fields["Credential"].split("/")
        if key != ACCESS_KEY:
            return _error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        token = request.headers.get("x-amz-security-token")
        if self.require_token and token != SESSION_TOKEN:
            return _error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        signed = fields["SignedHeaders"].split(";")
        if "host" not in signed or region != REGION or service != "bedrock":
            return _error(
                403, "InvalidSignatureException", "Credential should be scoped correctly."
            )
        headers = {name: request.headers.get(name, "") for name in signed}
        url = f"http://{request.headers['host']}{request.scope['raw_path'].decode()}"
        req = AWSRequest(method=request.method, url=url, data=raw, headers=headers)
        req.context["timestamp"] = request.headers.get("x-amz-date", "")
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "bedrock", REGION)
        expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        if expected != fields["Signature"] or not req.context["timestamp"].startswith(date):
            return _error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        return None


def _failure(model: str) -> Response | None:
    statuses = {
        "throttle": (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        "unavailable": (
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        "not-ready": (
            429,
            "ModelNotReadyException",
            "Model is not ready to serve inference requests.",
        ),
        "model-error": (424, "ModelErrorException", "The model failed to process the request."),
        "missing": (404, "ResourceNotFoundException", "Model not found."),
    }
    if model in statuses:
        return _error(*statuses[model])
    return None


def _tool_result(body: dict[str, Any]) -> str | None:
    """The text of the tool result the conversation ends with (a last user
    message of tool results only)."""
    last = body["messages"][-1]["content"]
    if any("text" in block for block in last):
        return None
    for block in last:
        if "toolResult" in block:
            return " ".join(c.get("text", "") for c in block["toolResult"]["content"])
    return None


def _words(body: dict[str, Any]) -> list[str]:
    result = _tool_result(body)
    if result is not None:
        return f"the tool said {result}".split()
    for msg in reversed(body["messages"]):
        if msg["role"] == "user":
            texts = [b["text"] for b in msg["content"] if "text" in b]
            if texts:
                return " ".join(texts).split() or ["ok"]
    return ["ok"]


def _usage(body: dict[str, Any], out: int) -> dict[str, Any]:
    words = len(_words(body))
    return {
        "inputTokens": words,
        "outputTokens": out,
        "totalTokens": words + out + CACHE_READ + CACHE_WRITE,
        "cacheReadInputTokens": CACHE_READ,
        "cacheWriteInputTokens": CACHE_WRITE,
    }


def _reply(model: str, body: dict[str, Any]) -> dict[str, Any]:
    words = _words(body)
    content: list[dict[str, Any]]
    if model == "tool" and _tool_result(body) is None:
        name = body["toolConfig"]["tools"][0]["toolSpec"]["name"]
        content = [
            {
                "reasoningContent": {
                    "reasoningText": {"text": "weather needs a tool", "signature": SIGNATURE}
                }
            },
            {"toolUse": {"toolUseId": "tooluse_abc123", "name": name, "input": {"city": "Paris"}}},
        ]
        stop, out = "tool_use", 12
    elif model == "guardrail":
        content, stop, out = (
            [{"text": "Sorry, the model cannot answer this question."}],
            "guardrail_intervened",
            0,
        )
    else:
        content, stop, out = [{"text": " ".join(words)}], "end_turn", len(words)
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": _usage(body, out),
        "metrics": {"latencyMs": 12},
    }


async def _stream(model: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
    yield event("messageStart", {"role": "assistant"})
    words = _words(body)
    if model.startswith("stream-"):
        yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": words[0]}})
        if model == "stream-throttle":
            yield exception(
                "throttlingException", "Too many tokens, please wait before trying again."
            )
        elif model == "stream-garbled":
            yield garbled(
                event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " x"}})
            )
        else:
            yield event("contentBlockStop", {"contentBlockIndex": 0})[:10]
        return
    if model == "tool" and _tool_result(body) is None:
        name = body["toolConfig"]["tools"][0]["toolSpec"]["name"]
        yield event(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "weather "}}},
        )
        yield event(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "needs a tool"}}},
        )
        yield event(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": SIGNATURE}}},
        )
        yield event("contentBlockStop", {"contentBlockIndex": 0})
        start = {"toolUse": {"toolUseId": "tooluse_abc123", "name": name}}
        yield event("contentBlockStart", {"contentBlockIndex": 1, "start": start})
        for piece in ('{"city"', ': "Paris"}'):
            yield event(
                "contentBlockDelta",
                {"contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}},
            )
        yield event("contentBlockStop", {"contentBlockIndex": 1})
        stop, out = "tool_use", 12
    else:
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
        yield event("contentBlockStop", {"contentBlockIndex": 0})
        stop, out = (
            ("guardrail_intervened", 0) if model == "guardrail" else ("end_turn", len(words))
        )
    yield event("messageStop", {"stopReason": stop})
    yield event("metadata", {"usage": _usage(body, out), "metrics": {"latencyMs": 12}})


def _error(status: int, name: str, message: str) -> Response:
    headers = {"x-amzn-errortype": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return Response(
        orjson.dumps({"message": message}), status, headers, media_type="application/json"
    )


def _json(obj: Any) -> Response:
    return Response(orjson.dumps(obj), 200, media_type="application/json")

"""A loopback Gemini API (generativelanguage.googleapis.com/v1beta) for tests,
speaking the wire as Google documents it:

  POST /v1beta/models/{model}:generateContent
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (data: {...}\\r\\n\\r\\n)
  POST /v1beta/models/{model}:countTokens   {"totalTokens": N}, N the words of the text
                                            parts (system instruction included)
  GET  /v1beta/models/{model}

The key goes in `x-goog-api-key`: none gets 403 PERMISSION_DENIED, a wrong one
400 INVALID_ARGUMENT with reason API_KEY_INVALID (both as Google answers). A
body field Gemini does not define gets 400 INVALID_ARGUMENT ("Unknown name").
Errors are `{"error": {"code", "message", "status", "details"}}`.

Behaviour by model name:
  gemini-echo       the last user text back, in two chunks when streamed; usage
                    prompt = words + CACHED, cached CACHED, candidates = words
                    out, thoughts THOUGHTS when thinkingConfig asks for them
  gemini-tool       a functionCall of the first declared function, args
                    {"city": "Paris"}, with a thoughtSignature; when the last
                    content is a functionResponse, the text "the tool said
                    <its response.output>"
  gemini-safety     finishReason SAFETY, no content
  gemini-blocked    promptFeedback.blockReason PROHIBITED_CONTENT, no candidates
  gemini-429        429 RESOURCE_EXHAUSTED with RetryInfo retryDelay 17.2s
  gemini-503        503 UNAVAILABLE ("The model is overloaded")
  gemini-500        500 INTERNAL
  gemini-midstream  one text chunk, then data: {"error": {503 UNAVAILABLE}}
  gemini-garbled    one text chunk, then a data line that is not JSON
  gemini-cut        one text chunk without finishReason, then EOF
  (not gemini-*)    404 NOT_FOUND, as for a model Google does not serve
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

API_KEY = "gm-test-key-0123456789"
CACHED = 50
THOUGHTS = 7
SIGNATURE = "c2lnbmF0dXJlLW9mLWEtdGhvdWdodA=="
_FIELDS = frozenset(
    {
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
    }
)

_COUNT_FIELDS = frozenset({"contents", "generateContentRequest"})


@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeGemini:
    seen: list[Seen] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/v1beta/models/{rest:path}", self.handle, methods=["GET", "POST"])]
        )

    async def handle(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        model, _, method = rest.partition(":")
        denied = _auth(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            if method or not model.startswith("gemini-"):
                return _error(
                    404, "NOT_FOUND", f"models/{model} is not found for API version v1beta"
                )
            return _json(
                {"name": f"models/{model}", "displayName": model, "inputTokenLimit": 1048576}
            )
        body = orjson.loads(await request.body())
        self.seen.append(Seen(request.url.path, request.url.query, dict(request.headers), body))
        unknown = sorted(set(body) - (_COUNT_FIELDS if method == "countTokens" else _FIELDS))
        if unknown:
            return _error(
                400,
                "INVALID_ARGUMENT",
                f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.',
            )
        if method == "countTokens":
            return _count(model, body)
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, "NOT_FOUND", "method not found")
        if not model.startswith("gemini-"):
            return _error(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version v1beta, or is not supported "
                f"for {method}.",
            )
        failure = _failure(model)
        if failure is not None:
            return failure
        chunks = _answer(model, body)
        if method == "generateContent":
            return _json(_whole(chunks))
        if request.query_params.get("alt") != "sse":
            return _error(400, "INVALID_ARGUMENT", "this fake streams with alt=sse only")
        return StreamingResponse(_sse(model, chunks), media_type="text/event-stream")


def _count(model: str, body: dict[str, Any]) -> Response:
    """countTokens: `contents` or a whole `generateContentRequest` (never both),
    `{"totalTokens": N, "promptTokensDetails": [...]}`, N the words of every
    text part, system instruction included."""
    if not model.startswith("gemini-"):
        return _error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta")
    failure = _failure(model)
    if failure is not None:
        return failure
    request = body.get("generateContentRequest")
    if "contents" in body and request is not None:
        return _error(
            400, "INVALID_ARGUMENT", "contents and generateContentRequest are mutually exclusive."
        )
    if request is not None:
        unknown = sorted(set(request) - _FIELDS - {"model"})
        if unknown:
            return _error(
                400,
                "INVALID_ARGUMENT",
                f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
                "'generate_content_request': Cannot find field.",
            )
        if request.get("model") != f"models/{model}":
            message = "generateContentRequest.model must name the model."
            return _error(400, "INVALID_ARGUMENT", message)
    source = request if request is not None else body
    contents = list(source.get("contents") or [])
    if "systemInstruction" in source:
        contents.append(source["systemInstruction"])
    words = sum(len(str(p.get("text", "")).split()) for c in contents for p in c.get("parts", []))
    return _json(
        {"totalTokens": words, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": words}]}
    )


def _auth(request: Request) -> Response | None:
    key = request.headers.get("x-goog-api-key")
    if key is None:
        return _error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity).",
        )
    if key != API_KEY:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
        }
        return _error(
            400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info]
        )
    return None


def _failure(model: str) -> Response | None:
    if model == "gemini-429":
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17.2s"}
        return _error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [retry])
    if model == "gemini-503":
        return _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    if model == "gemini-500":
        return _error(500, "INTERNAL", "An internal error has occurred.")
    return None


def _last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in content.get("parts", []) if "text" in p]
            if texts:
                return " ".join(texts)
    return ""


def _function_output(body: dict[str, Any]) -> str | None:
    contents = body.get("contents") or [{}]
    for part in contents[-1].get("parts", []):
        if "functionResponse" in part:
            return str(part["functionResponse"].get("response", {}).get("output"))
    return None


def _answer(model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The response chunks; the non-streamed reply is their merge."""
    output = _function_output(body) if model == "gemini-tool" else None
    text = _last_user_text(body) if output is None else f"the tool said {output}"
    words = text.split() or ["ok"]
    config = body.get("generationConfig", {})
    thinking = "thinkingConfig" in config
    thoughts = THOUGHTS if thinking else 0
    prompt = len(words) + CACHED
    base = {"modelVersion": model, "responseId": "resp-gemini-1"}

    def usage(out: int) -> dict[str, Any]:
        meta = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": out,
            "totalTokenCount": prompt + out + thoughts,
            "cachedContentTokenCount": CACHED,
        }
        if thoughts:
            meta["thoughtsTokenCount"] = thoughts
        return meta

    def chunk(parts: list[dict[str, Any]], finish: str | None, out: int) -> dict[str, Any]:
        cand: dict[str, Any] = {"index": 0}
        if parts:
            cand["content"] = {"role": "model", "parts": parts}
        if finish:
            cand["finishReason"] = finish
        return {**base, "candidates": [cand], "usageMetadata": usage(out)}

    if model == "gemini-tool" and output is None:
        name = body["tools"][0]["functionDeclarations"][0]["name"]
        call = {
            "functionCall": {"name": name, "args": {"city": "Paris"}},
            "thoughtSignature": SIGNATURE,
        }
        return [chunk([{"text": "Let me look."}], None, 3), chunk([call], "STOP", 9)]
    if model == "gemini-safety":
        return [chunk([], "SAFETY", 0)]
    if model == "gemini-blocked":
        return [
            {
                **base,
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": usage(0),
            }
        ]
    half = max(1, len(words) // 2)
    first = " ".join(words[:half])
    second = "".join(" " + w for w in words[half:])
    lead = [{"text": "thinking it over", "thought": True}] if thinking else []
    if model in ("gemini-midstream", "gemini-garbled", "gemini-cut"):
        return [chunk([{"text": first}], None, half)]
    return [
        chunk([*lead, {"text": first}], None, half),
        chunk([{"text": second}] if second else [], "STOP", len(words)),
    ]


def _whole(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for c in chunks:
        for cand in c.get("candidates", []):
            parts.extend(cand.get("content", {}).get("parts", []))
    last = dict(chunks[-1])
    if "candidates" in last:
        cand = dict(last["candidates"][0])
        if parts:
            cand["content"] = {"role": "model", "parts": parts}
        last["candidates"] = [cand]
    return last


async def _sse(model: str, chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield b"data: " + orjson.dumps(c) + b"\r\n\r\n"
    if model == "gemini-midstream":
        err = {
            "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
        }
        yield b"data: " + orjson.dumps(err) + b"\r\n\r\n"
    elif model == "gemini-garbled":
        yield b'data: {"candidates": [{"content": \r\n\r\n'


def _error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return _json({"error": err}, code)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")

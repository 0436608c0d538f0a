"""No configured secret reaches a tenant, in any encoding, in any relayed
byte: error bodies, 200 bodies and stream events. The raw test upstream echoes
the credentials it was sent (the bearer token and every x-/api- header) in
each encoding of `encodings()`."""

from __future__ import annotations

import base64
import contextlib
import urllib.parse
from collections.abc import Iterator

import httpx
import orjson
import pytest

from forebay.gateway.redact import MIN_SECRET_CHARS, Redactor
from tests.conftest import Gateway, GatewayFactory
from tests.support.deployments import deployment
from tests.support.raw_upstream import RawUpstream, encodings

KEY = "sk-upstream/secret+with=odd-chars-0123456789"  # api_key: sent as a bearer token
AZURE = "azure-api-key-abcdef0123456789"  # headers: {api-key: ...}
OTHER = "x-api-key-value-ZYXWVU987654"  # headers: {x-api-key: ...}
ELSEWHERE = "sk-of-another-deployment-5555"  # a deployment this request never uses
SECRETS = (KEY, AZURE, OTHER, ELSEWHERE)
ENCODINGS = list(encodings(KEY))


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream() as server:
        yield server


@pytest.fixture
def gw(make_gateway: GatewayFactory, raw: RawUpstream) -> Gateway:
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      m:
        deployments:
          - name: echoing
            base_url: {raw.base_url}
            model: ok
            api_key: "{KEY}"
            headers: {{api-key: "{AZURE}", x-api-key: "{OTHER}", x-flag: "yes",
                       x-also: "{ELSEWHERE}"}}
      other:
        deployments:
          - {{name: other, base_url: "{raw.base_url}", model: ok, api_key: "{ELSEWHERE}"}}
    """
    )


def _leaks(text: str) -> list[str]:
    """Every secret found in `text`, raw or after undoing any encoding."""
    found = []
    views = [text, urllib.parse.unquote_plus(text)]
    for view in list(views):
        with contextlib.suppress(orjson.JSONDecodeError):
            views.append(orjson.loads(f'"{view}"'))  # JSON-unescape the whole text
        unslashed = view.replace("\\\\", "\\").replace("\\/", "/")
        views.append(unslashed.encode().decode("unicode_escape", "replace"))
    for secret in SECRETS:
        forms = set(encodings(secret).values())
        if any(secret in v for v in views) or any(f in text for f in forms):
            found.append(secret)
    return found


def _ask(gw: Gateway, content: str, *, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": content}], "stream": stream},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
        timeout=30,
    )


@pytest.mark.parametrize(("status", "answered"), [(400, 400), (500, 502), (200, 200)])
@pytest.mark.parametrize("stream", [False, True])
def test_no_form_of_any_secret_reaches_the_client(
    gw: Gateway, raw: RawUpstream, status: int, answered: int, stream: bool
) -> None:
    for encoding in ENCODINGS:
        resp = _ask(gw, f"as echo-secrets-{status} {encoding}", stream=stream)
        assert resp.status_code == answered, resp.text
        assert _leaks(resp.text) == [], (encoding, resp.text)
        assert "[redacted]" in resp.text, (encoding, resp.text)  # the echo did happen
        if stream and status == 200:
            events = [ln[6:] for ln in resp.text.splitlines() if ln.startswith("data: ")]
            assert events[-1] == "[DONE]"
            for event in events[:-1]:
                orjson.loads(event)  # redaction keeps every event valid JSON
        elif status == 200:
            orjson.loads(resp.content)
    # The upstream really was sent the secrets it echoed.
    sent = raw.seen[-1].headers
    assert sent["authorization"] == f"Bearer {KEY}" and sent["api-key"] == AZURE


def test_every_encoding_at_once_in_a_200_body(gw: Gateway) -> None:
    resp = _ask(gw, "as echo-secrets-200")
    assert resp.status_code == 200
    assert _leaks(resp.text) == []
    content = resp.json()["choices"][0]["message"]["content"]
    assert content.count("[redacted]") >= len(ENCODINGS) * 3


def test_the_redactor_collects_every_deployments_secrets(gw: Gateway) -> None:
    deployments = [d for m in gw.services.settings.models.values() for d in m.deployments]
    redactor = Redactor.for_deployments(deployments)
    for secret in SECRETS:
        for form in encodings(secret).values():
            assert redactor.redact(f"x {form} y".encode()) != f"x {form} y".encode(), form
    # A value shorter than MIN_SECRET_CHARS would redact ordinary words: left alone.
    assert len("yes") < MIN_SECRET_CHARS
    assert redactor.redact(b"yes, the key is fine") == b"yes, the key is fine"


def test_a_secret_is_found_inside_a_longer_base64_string() -> None:
    redactor = Redactor([AZURE])
    for prefix in (b"", b"u", b"us", b"user:"):
        encoded = base64.b64encode(prefix + AZURE.encode() + b":tail")
        assert redactor.redact(encoded) != encoded, prefix


def test_clean_bytes_come_back_as_the_same_object() -> None:
    redactor = Redactor([KEY])
    chunk = b'data: {"choices":[{"delta":{"content":"caf\\u00e9 50% \\n done"}}]}\n\n'
    assert redactor.redact(chunk) is chunk


def test_aws_secrets_of_a_bedrock_deployment_are_redacted_too() -> None:
    """Not only `api_key` and `headers:`: a Bedrock deployment's secret access key
    and session token are secrets as well (Deployment.secrets)."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    token = "FwoGZXIvYXdzEBYaDExampleSessionToken0123456789"
    dep = deployment(
        "provider: bedrock, model: m, aws: {region: us-east-1, access_key_id: AKIDEXAMPLE,"
        f" secret_access_key: '{secret}', session_token: '{token}'}}"
    )
    redactor = Redactor.for_deployments([dep])
    leaked = f'{{"message": "signature for {secret} with token {token} is wrong"}}'.encode()
    out = redactor.redact(leaked)
    assert secret.encode() not in out and token.encode() not in out
    assert b"signature for" in out  # the rest of the message is kept

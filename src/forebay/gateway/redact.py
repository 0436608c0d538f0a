"""Keep every configured secret out of what is relayed to a tenant.

A misconfigured or hostile upstream may echo the credentials it was sent:
in an error message, in a 200 body, inside stream events, and escaped in any
way JSON or a URL allows. The secrets are every deployment's `api_key` and
every value of every deployment's `headers:` (all deployments, since any
upstream may echo any header it was sent, and a header value often carries a
scheme word: "Bearer sk-...", so its words count too). Values shorter than
`MIN_SECRET_CHARS` are ignored: they would redact ordinary text ("true",
"2024-06"), and a credential that short protects nothing.

Forms matched: raw; JSON-escaped in any mix (any character as \\uXXXX, in
either case, behind any number of backslashes, and `\\/`); URL-encoded in any
mix (%XX, `+` for space); base64 and base64url of the secret at each of its
three alignments (so a secret inside a longer encoded string is found too).

Cost: one redactor is built at start. A chunk pays one pass of a compiled
multi-substring search (Aho-Corasick, ahocorasick-rs, in Rust: cheaper than
one `in` per needle once there are more than two or three) over the needles
of every secret: its longest run of URL-safe characters, which its raw, JSON
and URL forms all contain verbatim, and the same for each base64 alignment;
plus the escapes that could hide a printable ASCII character (\\u0020 to
\\u007F, \\/, %20 to %7F). Only a
chunk with such an escape is decoded and searched again, and only a secret
whose needle was found is then searched for with its full pattern (every
form, every mix of escapes), which is slow but runs only when that secret (or
a close relative of it) is there.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterable

import orjson
from ahocorasick_rs import BytesAhoCorasick

from forebay.config.settings import Deployment

MIN_SECRET_CHARS = 8
REDACTED = b"[redacted]"
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
_SCHEMES = frozenset({"bearer", "basic", "token", "apikey", "key"})
# Escapes that can hide an ASCII character (é as \\u00e9 or 中 as \\u4e2d cannot):
# only a chunk with one of these needs decoding before the substring search.
# Each pattern starts with a literal, so the regex engine skips ahead quickly.
# Secrets are printable, so only escapes of 0x20 to 0x7F count.
_TRIGGERS = (
    b"\\/",
    *(b"\\u00" + d for d in (b"2", b"3", b"4", b"5", b"6", b"7")),
    *(b"%" + d for d in (b"2", b"3", b"4", b"5", b"6", b"7")),
)
_BACKSLASH_ESCAPE = re.compile(rb"\\(?:\\*)(?:u00[2-7][0-9a-fA-F]|/)")
_PERCENT_ESCAPE = re.compile(rb"%[2-7][0-9a-fA-F]")


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in _expand(secrets) if len(s) >= MIN_SECRET_CHARS}
        # A value that contains another is redacted by redacting that one.
        values = {v for v in values if not any(o != v and o in v for o in values)}
        needles: list[bytes] = []
        patterns: list[re.Pattern[bytes] | None] = []  # per needle; None for a trigger
        for value in sorted(values):
            forms = [value, *_base64_forms(value)]
            forms.sort(key=len, reverse=True)  # the longest match wins
            pattern = re.compile(b"|".join(_form_pattern(f) for f in forms))
            for anchor in sorted({a for f in forms for a in _anchors(f)}):
                needles.append(anchor)
                patterns.append(pattern)
        self._index: BytesAhoCorasick | None = None
        if needles:
            self._index = BytesAhoCorasick([*needles, *_TRIGGERS])
        self._patterns = (*patterns, *(None for _ in _TRIGGERS))

    @classmethod
    def for_deployments(cls, deployments: Iterable[Deployment]) -> Redactor:
        secrets: list[str] = []
        for dep in deployments:
            secrets.extend(dep.secrets())  # keys, configured headers, AWS secrets
        return cls(secrets)

    def __bool__(self) -> bool:
        return self._index is not None

    def redact(self, data: bytes) -> bytes:
        """`data` with every form of every secret replaced; the same object when clean."""
        if self._index is None:
            return data
        found = self._index.find_matches_as_indexes(data, overlapping=True)
        if not found:
            return data  # the common case: one pass, nothing found
        hits = dict.fromkeys(self._patterns[i] for i, _, _ in found)
        if None in hits:  # an escape: look again at the decoded text
            plain = _BACKSLASH_ESCAPE.sub(_unescaped, data)
            plain = _PERCENT_ESCAPE.sub(_unescaped, plain)
            if plain is not data:
                hits.update(self._hits(plain))
        for pattern in hits:
            if pattern is not None:
                data = pattern.sub(REDACTED, data)
        return data

    def _hits(self, data: bytes) -> dict[re.Pattern[bytes] | None, None]:
        assert self._index is not None
        found = self._index.find_matches_as_indexes(data, overlapping=True)
        return dict.fromkeys(self._patterns[i] for i, _, _ in found)

    def redact_text(self, text: str) -> str:
        data = text.encode("utf-8", "surrogatepass")
        clean = self.redact(data)
        return text if clean is data else clean.decode("utf-8", "replace")


def _unescaped(match: re.Match[bytes]) -> bytes:
    escape = match.group()
    return b"/" if escape.endswith(b"/") else bytes([int(escape[-2:], 16)])


def _expand(secrets: Iterable[str]) -> Iterable[str]:
    """Each value, its words ("Bearer sk-..." -> "sk-..."), and Basic credentials."""
    for secret in secrets:
        yield secret
        words = secret.split()
        if len(words) < 2:
            continue
        yield from words
        if words[0].lower() in _SCHEMES and len(words) == 2:
            try:
                decoded = base64.b64decode(words[1], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
            yield decoded  # user:password
            yield decoded.partition(":")[2]


def _anchors(form: str) -> list[bytes]:
    """Substrings every cheap-to-spot encoding of `form` contains verbatim: its
    longest run of characters JSON and URL encoding leave alone, or, when that
    run is short, the whole of each literal form."""
    runs = _UNRESERVED.findall(form)
    longest = max(runs, key=len, default="")
    if len(longest) >= MIN_SECRET_CHARS or longest == form:
        return [longest.encode()]
    literal = {
        form,
        orjson.dumps(form).decode()[1:-1],
        urllib.parse.quote(form, safe=""),
        urllib.parse.quote_plus(form),
    }
    return [f.encode() for f in literal]


def _base64_forms(secret: str) -> list[str]:
    """The base64 text that encodes `secret` wherever it starts in a longer
    string: for each of the three alignments, the characters that depend on
    the secret's bytes alone; in both alphabets."""
    raw = secret.encode()
    out = []
    for lead in range(3):
        encoded = base64.b64encode(b"\0" * lead + raw).decode().rstrip("=")
        start = (0, 2, 3)[lead]
        end = len(encoded) - (1 if (lead + len(raw)) % 3 else 0)
        stable = encoded[start:end]
        if len(stable) >= MIN_SECRET_CHARS:
            out.append(stable)
            urlsafe = stable.replace("+", "-").replace("/", "_")
            if urlsafe != stable:
                out.append(urlsafe)
    return out


def _form_pattern(form: str) -> bytes:
    return b"".join(_char_pattern(c) for c in form)


def _char_pattern(c: str) -> bytes:
    """Every way one character may appear: itself, \\uXXXX (any case, any
    number of backslashes), %XX, a backslash before '"', '\\' or '/', and `+`
    for ' '."""
    raw = c.encode("utf-8", "surrogatepass")
    alts = [re.escape(raw)]
    utf16 = c.encode("utf-16-be", "surrogatepass")  # two units (a surrogate pair) past U+FFFF
    units = [int.from_bytes(utf16[i : i + 2], "big") for i in range(0, len(utf16), 2)]
    alts.append(b"".join(rb"\\+u" + _any_case(f"{u:04x}") for u in units))
    alts.append(b"".join(b"%" + _any_case(f"{b:02x}") for b in raw))
    if c in '"\\/':
        alts.append(rb"\\+" + re.escape(raw))
    if c == " ":
        alts.append(rb"\+")
    return b"(?:" + b"|".join(alts) + b")"


def _any_case(hex_digits: str) -> bytes:
    return b"".join(f"[{h}{h.upper()}]".encode() if h.isalpha() else h.encode() for h in hex_digits)

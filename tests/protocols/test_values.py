"""The one data-URL parser both sides use (client bodies and upstream wires)."""

from __future__ import annotations

import pytest

from forebay.protocols.canonical import ImagePart
from forebay.protocols.gemini import _media
from forebay.protocols.values import data_url, split_data_url


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("data:image/png;base64,AAAA", ("image/png", "AAAA")),
        ("data:image/png;charset=utf-8;base64,AAAA", ("image/png", "AAAA")),
        ("data:;base64,AAAA", (None, "AAAA")),
        ("data:image/png,AAAA", (None, None)),  # not base64: no inline bytes
        ("data:image/png;base64", (None, None)),
        ("https://example.com/a.png", (None, None)),
    ],
)
def test_split_data_url(url: str, want: tuple[str | None, str | None]) -> None:
    assert split_data_url(url) == want


def test_round_trip_and_upstream_use_the_same_parser() -> None:
    assert split_data_url(data_url("image/webp", "QUJD")) == ("image/webp", "QUJD")
    # Gemini's inlineData wants the bare type, whatever parameters the URL named.
    wire = _media(ImagePart(url="data:image/jpeg;name=x.jpg;base64,QUJD"), "m")
    assert wire == {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}}

"""Header checks, framing and path normalisation (reflow.edge.http), and what llhttp refuses."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.edge.http import build_head, check_framing, check_header, normalise_path
from reflow.errors import InvalidRequestError


class _Sink:
    def on_header(self, name: bytes, value: bytes) -> None:
        pass


def _llhttp_accepts(raw: bytes) -> bool:
    try:
        httptools.HttpRequestParser(_Sink()).feed_data(raw)
    except httptools.HttpParserError:
        return False
    return True


def _check_accepts(name: bytes, value: bytes) -> bool:
    try:
        check_header(name, value)
    except InvalidRequestError:
        return False
    return True


@pytest.mark.parametrize("code", [*range(0, 32), 127, 128, 255])
def test_llhttp_refuses_exactly_the_header_bytes_check_header_refuses(code: int) -> None:
    # The server skips check_header on the hit path because llhttp enforces the
    # same rule; this test fails if an httptools upgrade ever relaxes it.
    char = bytes([code])
    value_raw = b"GET / HTTP/1.1\r\nHost: x\r\nX: a" + char + b"b\r\n\r\n"
    name_raw = b"GET / HTTP/1.1\r\nHost: x\r\nX" + char + b"Y: v\r\n\r\n"
    assert _llhttp_accepts(value_raw) == _check_accepts(b"X", b"a" + char + b"b")
    assert _llhttp_accepts(name_raw) == _check_accepts(b"X" + char + b"Y", b"v")


def test_framing_refuses_every_ambiguous_length() -> None:
    assert check_framing([("content-length", "5")]) == 5
    assert check_framing([("transfer-encoding", "chunked")]) == -1
    for headers, status in (
        ([("content-length", "5"), ("content-length", "5")], 400),
        ([("content-length", "+5")], 400),
        ([("content-length", "0_2e")], 400),
        ([("content-length", "5"), ("transfer-encoding", "chunked")], 400),
        ([("transfer-encoding", "gzip, chunked")], 501),
        ([("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")], 501),
    ):
        with pytest.raises(InvalidRequestError) as caught:
            check_framing(headers)
        assert caught.value.status == status, headers


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/./b/../c", "/a/c", ""),
        ("//a///b", "/a/b", ""),
        ("/%7euser/%41", "/~user/A", ""),
        ("/a%2fb", "/a%2Fb", ""),
        ("/a/..", "/", ""),
        ("/../../etc/passwd", "/etc/passwd", ""),
        ("/dir/?x=1&y=%2", "/dir/", "x=1&y=%2"),
        ("http://host.example/p?q", "/p", "q"),
    ],
)
def test_paths_normalise_as_the_origin_routes_them(target: str, path: str, query: str) -> None:
    assert normalise_path(target) == (path, query)


@pytest.mark.parametrize("target", ["/%00", "/%zz", "/%4", "*", "example.com", "/a b"])
def test_unroutable_targets_are_refused(target: str) -> None:
    with pytest.raises(InvalidRequestError):
        normalise_path(target)


def test_response_head_is_one_block_with_length_and_close() -> None:
    head = build_head(200, "OK", [("X", "1")], 3, keep_alive=False)
    assert head == b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"


_SEGMENTS = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2E%2e", "%41", "%2F", "~x", "c%20d"])


@settings(deadline=None)
@given(st.lists(_SEGMENTS, max_size=12), st.booleans())
def test_normalised_paths_are_fixed_points_without_dot_segments_or_empty_ones(
    segments: list[str], trailing: bool
) -> None:
    target = "/" + "/".join(segments) + ("/" if trailing else "")
    path, _ = normalise_path(target)
    assert normalise_path(path) == (path, "")
    parts = path.split("/")[1:]
    assert all(p not in (".", "..") for p in parts)
    assert "//" not in path
    assert path.startswith("/")

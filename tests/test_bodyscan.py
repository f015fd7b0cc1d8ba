"""The C body scanner and the Python one agree with a line-by-line reference."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap import _pure
from pop3tap.protocol import _bodyscan
from pop3tap.protocol._bodyscan import ChunkScanner, scan_chunk_python

try:
    from pop3tap.protocol._bodyscan_c import scan_chunk as scan_chunk_c
except ImportError:  # no compiler at install time
    scan_chunk_c = None

SCANNERS: list[ChunkScanner] = [scan_chunk_python]
if scan_chunk_c is not None:
    SCANNERS.append(scan_chunk_c)


def reference(data: bytes, pos: int, limit: int, prev_cr: bool) -> tuple[int, int, bool]:
    """Byte by byte: the first LF followed by ``.CRLF`` or ``.LF`` wholly before limit."""
    newlines, bare = 0, False
    for i in range(pos, limit):
        if data[i] != 0x0A:
            continue
        newlines += 1
        before_cr = data[i - 1] == 0x0D if i > pos else prev_cr
        bare = bare or not before_cr
        rest = data[i + 1 : limit]
        if rest.startswith(b".\n"):
            return i + 3, newlines + 1, True
        if rest.startswith(b".\r\n"):
            return i + 4, newlines + 1, bare
    return -1, newlines, bare


_TOKENS = [b"a", b"xy z", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n", b".\n", b"\n.", b"\r\n."]


@settings(max_examples=600, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(_TOKENS), max_size=30),
    cut=st.tuples(st.integers(0, 200), st.integers(0, 200)),
    prev_cr=st.booleans(),
)
def test_scanners_match_the_reference(
    tokens: list[bytes], cut: tuple[int, int], prev_cr: bool
) -> None:
    data = b"".join(tokens)
    pos, limit = sorted(min(c, len(data)) for c in cut)
    expected = reference(data, pos, limit, prev_cr)
    for scan in SCANNERS:
        assert scan(data, pos, limit, prev_cr) == expected, scan


@settings(max_examples=600, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=30),
    pick=st.integers(0, 1000),
    prev_cr=st.booleans(),
)
def test_scanners_match_the_reference_from_a_line_end(
    tokens: list[bytes], pick: int, prev_cr: bool
) -> None:
    """Chunks that start right at a LF, where the CR before it came in the last chunk."""
    data = b"".join(tokens)
    starts = [i for i, byte in enumerate(data) if byte == 0x0A] or [0]
    pos = starts[pick % len(starts)]
    expected = reference(data, pos, len(data), prev_cr)
    for scan in SCANNERS:
        assert scan(data, pos, len(data), prev_cr) == expected, scan


@pytest.mark.parametrize("scan", SCANNERS)
@pytest.mark.parametrize(
    ("data", "pos", "limit", "prev_cr", "expected"),
    [
        # The CR of a terminator came in the previous chunk: CR | LF . CR LF.
        (b"\n.\r\n", 0, 4, True, (4, 2, False)),
        (b"x\r\n.\r\nmore\r\n.\r\n", 2, 15, True, (6, 2, False)),
        (b"\n.\n", 0, 3, True, (3, 2, True)),
        (b"\n.\r\n", 0, 4, False, (4, 2, True)),
    ],
)
def test_terminator_right_at_pos(
    scan: ChunkScanner,
    data: bytes,
    pos: int,
    limit: int,
    prev_cr: bool,
    expected: tuple[int, int, bool],
) -> None:
    assert reference(data, pos, limit, prev_cr) == expected
    assert scan(data, pos, limit, prev_cr) == expected


@pytest.mark.parametrize("scan", SCANNERS)
def test_large_crlf_body_without_terminator(scan: ChunkScanner) -> None:
    chunk = (b"line of text\r\n" + b"..stuffed\r\n") * 20_000
    assert scan(chunk, 0, len(chunk), False) == (-1, 40_000, False)
    assert scan(chunk, 3, len(chunk) - 1, False) == (-1, 39_999, False)


@pytest.mark.parametrize("scan", SCANNERS)
def test_terminator_cut_by_limit_is_left_for_the_next_chunk(scan: ChunkScanner) -> None:
    data = b"abc\r\n.\r\n"
    assert scan(data, 0, len(data) - 1, False) == (-1, 1, False)
    assert scan(data, 0, len(data), False) == (len(data), 2, False)


def test_c_scanner_rejects_bad_ranges() -> None:
    if scan_chunk_c is None:
        pytest.skip("the C scanner is not built")
    with pytest.raises(ValueError):
        scan_chunk_c(b"abc", 2, 1, False)
    with pytest.raises(ValueError):
        scan_chunk_c(b"abc", 0, 4, False)
    with pytest.raises(TypeError):
        scan_chunk_c("text", 0, 1, False)  # type: ignore[arg-type]


def test_c_scanner_is_in_use_when_required() -> None:
    """scripts/test.sh sets POP3TAP_REQUIRE_C_SCANNER=1, so CI fails if the build fell back."""
    if os.environ.get("POP3TAP_REQUIRE_C_SCANNER") != "1":
        pytest.skip("POP3TAP_REQUIRE_C_SCANNER is not set")
    assert scan_chunk_c is not None
    # POP3TAP_PURE_PYTHON=1 (CI's pure run) must still choose the Python scanner.
    assert ("python" if _pure.requested() else "c") == _bodyscan.SCANNER

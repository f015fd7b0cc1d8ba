"""Scanning a chunk of a multi-line body: where it ends, how many LFs, whether any is bare.

A body ends at a line that is exactly ``.`` (RFC 1939 §3). Lines end at LF, with or without
a CR before it (pop3-protocol §0 rule 6), so the terminator is ``LF . CRLF`` or ``LF . LF``.
This is the one place where every byte of a large RETR is looked at, so it has two
implementations with the same results:

* ``_bodyscan_c`` (``_bodyscan.c``), built when a C compiler is present: one pass, jumping
  from LF to LF with ``memchr``.
* :func:`scan_chunk_python`: ``bytes.find`` and ``bytes.count`` (three C-level passes).

``POP3TAP_PURE_PYTHON=1`` in the environment forces the Python one.
"""

from __future__ import annotations

from collections.abc import Callable

from pop3tap import _pure

#: ``scan(data, pos, limit, prev_cr) -> (end, newlines, bare_lf)``.
ChunkScanner = Callable[[bytes, int, int, bool], tuple[int, int, bool]]


def scan_chunk_python(data: bytes, pos: int, limit: int, prev_cr: bool) -> tuple[int, int, bool]:
    """Scan ``data[pos:limit]`` for the first terminator lying wholly inside it.

    ``prev_cr`` says whether the byte before ``pos`` was a CR. Returns the offset just past
    the terminator (-1 if none), the number of LFs from ``pos`` up to there (or to
    ``limit``), and whether any of those LFs had no CR before it.

    In the common case (CRLF only) this is three passes: a ``find`` of ``CRLF.CRLF`` and a
    ``count`` of LF and of CRLF up to it. When the counts agree there is no bare LF, so the
    first terminator has a CR before its leading LF and the ``find`` saw it. Otherwise the
    region is searched again for ``LF.CRLF`` and ``LF.LF``.
    """
    if pos >= limit:
        return -1, 0, False
    straddle = 1 if prev_cr and data[pos] == 0x0A else 0
    if straddle and pos + 4 <= limit and data.startswith(b".\r\n", pos + 1):
        # CR (before pos) LF . CR LF: the find below cannot see a CR before ``pos``.
        return pos + 4, 2, False
    crlf = data.find(b"\r\n.\r\n", pos, limit)
    stop = limit if crlf < 0 else crlf + 5
    newlines = data.count(b"\n", pos, stop)
    crlfs = data.count(b"\r\n", pos, stop)
    end = -1
    if newlines != crlfs + straddle:
        lf_crlf = data.find(b"\n.\r\n", pos, stop)
        lf_lf = data.find(b"\n.\n", pos, stop)
        if lf_crlf >= 0:
            end = lf_crlf + 4
        if lf_lf >= 0 and (end < 0 or lf_lf + 3 < end):
            end = lf_lf + 3
        if 0 <= end < stop:
            newlines = data.count(b"\n", pos, end)
            crlfs = data.count(b"\r\n", pos, end)
    if end < 0 and crlf >= 0:
        end = crlf + 5
    return end, newlines, newlines != crlfs + straddle


def _load() -> tuple[ChunkScanner, str]:
    if _pure.requested():
        return scan_chunk_python, "python"
    try:
        from pop3tap.protocol._bodyscan_c import scan_chunk
    except ImportError:
        return scan_chunk_python, "python"
    return scan_chunk, "c"


scan_chunk, SCANNER = _load()

#: ``stats(data, pos, limit) -> (crs, dot_lines, stuffed, odd, first_odd)``.
BodyStats = Callable[[bytes, int, int], tuple[int, int, int, int, int]]


def body_stats_python(data: bytes, pos: int, limit: int) -> tuple[int, int, int, int, int]:
    """CRs and dot lines in ``data[pos:limit]`` (for ``lint``/``diff``; RFC 1939 §3).

    A dot line is an LF at ``p`` followed by ``.``, counted when ``p + 2 < limit`` (the byte
    after the dot is in the chunk). It is stuffed (``..``), a terminator candidate (``.``
    then CR or LF) or odd: a line the server did not dot-stuff. ``first_odd`` is the offset
    of the LF before the first odd line, or -1. ``bytes.count`` passes; the C twin is one.
    """
    crs = data.count(b"\r", pos, limit)
    dots = data.count(b"\n.", pos, limit - 1) if limit - pos >= 3 else 0
    if not dots:
        return crs, 0, 0, 0, -1
    stuffed = data.count(b"\n..", pos, limit)
    if dots == stuffed:
        return crs, dots, stuffed, 0, -1
    ends = data.count(b"\n.\r", pos, limit) + data.count(b"\n.\n", pos, limit)
    odd = dots - stuffed - ends
    first = -1
    if odd:
        first = data.find(b"\n.", pos, limit - 1)
        while first >= 0 and data[first + 2] in (0x2E, 0x0D, 0x0A):
            first = data.find(b"\n.", first + 1, limit - 1)
    return crs, dots, stuffed, odd, first


def _load_stats() -> BodyStats:
    if SCANNER == "python":
        return body_stats_python
    try:
        from pop3tap.protocol._bodyscan_c import body_stats as c_stats
    except ImportError:  # an older build of the extension
        return body_stats_python
    return c_stats


body_stats = _load_stats()

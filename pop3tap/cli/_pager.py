"""Where long command output goes: through a pager on a terminal, else straight out.

As git does: ``$PAGER`` (default ``less``) with ``LESS=FRX`` unless set, so one screen or
less is printed and left on the terminal, and colours pass. A pager that cannot start
falls back to plain output; quitting the pager early is not an error.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import TextIO, cast


@contextlib.contextmanager
def output(*, paging: bool = True) -> Iterator[TextIO]:
    """A stream for the output: a pager's stdin when stdout is a terminal."""
    command = os.environ.get("PAGER", "less")
    if not paging or not sys.stdout.isatty() or command.strip() in ("", "cat"):
        yield sys.stdout
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    try:
        pager = subprocess.Popen(
            shlex.split(command), stdin=subprocess.PIPE, text=True, errors="replace", env=env
        )
    except (OSError, ValueError):
        yield sys.stdout
        return
    assert pager.stdin is not None
    stream = cast(TextIO, pager.stdin)
    try:
        yield stream
        pager.stdin.close()
    except BrokenPipeError:
        pass  # the reader quit the pager: not an error
    except BaseException:
        with contextlib.suppress(BrokenPipeError):
            pager.stdin.close()
        raise
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            pager.wait()

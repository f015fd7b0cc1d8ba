"""What ``pop3tap check`` is given and what it returns: its settings, its one-line error
and its outcome."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
)

MASK: Final = SECRET_PLACEHOLDER.encode()


RECV_BYTES: Final = 256 * 1024


#: A step may take at most this many idle timeouts in total (a trickling server).
STEP_FACTOR: Final = 10


class CheckError(Exception):
    """The check cannot go on; the message is one line naming the step."""


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """What ``pop3tap check`` was asked to do."""

    host: str
    port: int
    capture_dir: Path
    allow_dele: bool = False
    timeout: float = 30.0
    upstream_ca: Path | None = None
    insecure_upstream: bool = False
    passwords: Mapping[str, str] = field(default_factory=dict)
    netrc_file: Path | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(slots=True)
class CheckOutcome:
    """The new capture and how the replay ended."""

    capture: Path
    sent: int
    #: Why the replay stopped before the end of the recorded session, or None.
    stopped: str | None = None

"""What a relay is told: :class:`RelayConfig`, and how it reaches the upstream."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from pop3tap.faults import check_relay_fault, parse_fault
from pop3tap.server import Endpoint
from pop3tap.tls import TlsConfig

#: Bytes asked of the kernel per receive; large enough that a big RETR is few chunks.
RECEIVE_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything a relay needs; defaults are what ``pop3tap record`` uses."""

    upstream: Endpoint
    listen: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 1110))
    #: Directory for capture files; None records nothing to disk.
    captures: Path | None = Path("captures")
    #: Keep PASS, APOP digests and SASL data in captures (logs stay masked).
    keep_secrets: bool = False
    #: Seconds open sessions may go on after shutdown is requested.
    grace: float = 10.0
    #: Seconds to wait for the upstream TCP connection.
    connect_timeout: float = 10.0
    #: Seconds to wait for the upstream greeting before giving up (None: forever).
    greeting_timeout: float | None = 30.0
    #: Seconds a TLS peer may go on sending after pop3tap passed the other side's close on
    #: to it (as ``close_notify``), before pop3tap closes that connection itself.
    close_linger: float = 5.0
    #: Seconds client bytes sent after STLS are held waiting for the server's answer;
    #: past it they are dropped and the session ends (they must not reach the server in
    #: plaintext if TLS follows, RFC 2595 §4).
    stls_timeout: float = 30.0
    #: The longest line the parser keeps (longer lines are flagged, not buffered).
    max_line: int = 8192
    #: Opens the upstream transport (TCP by default); TLS, if any, is layered on top.
    connector: Callable[[Endpoint], Awaitable[trio.abc.Stream]] | None = None
    #: TLS on either leg and STLS interception (see pop3tap.tls).
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: Fault specs (docs/faults.md) applied to what the client receives.
    faults: tuple[str, ...] = ()
    #: Allow faults that change what the server said (err, garble, unsolicited).
    fault_rewrite: bool = False

    def __post_init__(self) -> None:
        """Refuse values the relay cannot use, here rather than in every session.

        The recorder is built from ``keep_secrets``, ``max_line`` and
        ``tls.intercept_stls``; compiled (``setup.py``), it checks their types when each
        session starts, so a ``1`` for ``True`` would crash every session of a relay that
        started fine.

        Raises:
            TypeError: a flag that is not a bool, a ``max_line`` that is not an int.
            ValueError: a ``max_line`` below 1, or a fault spec that is wrong.
        """
        flags = {
            "RelayConfig.keep_secrets": self.keep_secrets,
            "RelayConfig.fault_rewrite": self.fault_rewrite,
            "RelayConfig.tls.intercept_stls": self.tls.intercept_stls,
        }
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, not {value!r}")
        if isinstance(self.max_line, bool) or not isinstance(self.max_line, int):
            raise TypeError(f"RelayConfig.max_line must be an int, not {self.max_line!r}")
        if self.max_line < 1:
            raise ValueError(f"RelayConfig.max_line must be at least 1, not {self.max_line}")
        for spec in self.faults:
            # FaultError is a ValueError naming the bad part
            check_relay_fault(parse_fault(spec), rewrite=self.fault_rewrite)

    def options(self) -> dict[str, Any]:
        """The options stored in each capture header."""
        extra: dict[str, Any] = {"faults": list(self.faults)} if self.faults else {}
        return {
            "keep_secrets": self.keep_secrets,
            "grace": self.grace,
            "connect_timeout": self.connect_timeout,
            "greeting_timeout": self.greeting_timeout,
            "stls_timeout": self.stls_timeout,
            "max_line": self.max_line,
            "close_linger": self.close_linger,
            **self.tls.options(),
            **extra,
        }


@functools.lru_cache(maxsize=64)
def _address_family(host: str) -> socket.AddressFamily | None:
    """The family of ``host`` if it is an IP address, None for a name."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


async def open_plain_upstream(endpoint: Endpoint) -> trio.abc.Stream:
    """Open a TCP connection to the upstream with Nagle off (commands are small): a
    ``trio.SocketStream`` sets ``TCP_NODELAY`` itself.

    An IP address is connected to directly; a name goes through ``open_tcp_stream``
    (resolution and happy eyeballs over its addresses).
    """
    family = _address_family(endpoint.host)
    if family is None:
        return await trio.open_tcp_stream(endpoint.host, endpoint.port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((endpoint.host, endpoint.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)

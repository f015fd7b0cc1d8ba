"""Carrying out a fault on one answer of a server pop3tap plays itself (replay, model).

:mod:`pop3tap.faults` decides *which* answer a fault hits; this module sends (or withholds)
the bytes over trio. The relay applies its transport faults on the live server stream
instead (:mod:`pop3tap.relay`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pop3tap._fastio import reset_on_close
from pop3tap.faults import Fault, FaultAction, garble

__all__ = ["Delivery", "deliver", "pace"]

#: How often a paced (``slow``) answer sends its next piece.
_PACE_TICK = 0.05


class Delivery:
    """What a connection needs to carry out a fault."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        stream: trio.abc.Stream,
        log: Any,
        *,
        wait_for_client_close: Callable[[], Awaitable[None]],
    ) -> None:
        self.send = send
        self.stream = stream
        self.log = log
        self.wait_for_client_close = wait_for_client_close


async def pace(send: Callable[[bytes], Awaitable[None]], data: bytes, rate: float) -> None:
    """Send ``data`` at about ``rate`` octets per second."""
    piece = max(1, int(rate * _PACE_TICK))
    start = trio.current_time()
    sent = 0
    while sent < len(data):
        chunk = data[sent : sent + piece]
        await send(chunk)
        sent += len(chunk)
        await trio.sleep_until(start + sent / rate)


async def deliver(
    delivery: Delivery, data: bytes, fault: Fault, *, seq: int, command: str
) -> str | None:
    """Send ``data`` (one whole answer) as ``fault`` says.

    Returns None when the session goes on, else the reason it ends (the caller closes the
    connection: with a FIN, or with a reset after :func:`pop3tap._fastio.reset_on_close`).
    """
    action = fault.action
    delivery.log.warning(
        "fault.injected", spec=fault.spec, action=action.value, seq=seq, command=command
    )
    if action is FaultAction.DELAY:
        await trio.sleep(fault.amount)
        await delivery.send(data)
        return None
    if action is FaultAction.SLOW:
        await pace(delivery.send, data, fault.amount)
        return None
    if action is FaultAction.CUT:
        await delivery.send(data[: int(fault.amount)])
        return f"fault: cut after {int(min(fault.amount, len(data)))} octets"
    if action is FaultAction.RESET:
        reset_on_close(delivery.stream)
        return "fault: reset"
    if action is FaultAction.STALL:
        await delivery.wait_for_client_close()
        return "fault: stalled until the client left"
    if action is FaultAction.CLOSE:
        return "fault: closed"
    if action is FaultAction.ERR:
        await delivery.send(b"-ERR " + fault.text.encode() + b"\r\n")
        return None
    if action is FaultAction.GARBLE:
        await delivery.send(garble(data, seed=fault.seed or 0))
        return None
    # UNSOLICITED: a line instead of the answer, then close (RFC 2449 §8.1.2 servers do).
    await delivery.send(fault.text.encode() + b"\r\n")
    return "fault: unsolicited line, then closed"

"""uvicorn's h11 protocol with the limits a server on a network needs and uvicorn lacks.

uvicorn closes a keep-alive connection that stays idle, but a client that opens a connection and
then sends its request head or body slowly (or never) keeps it, and its file descriptor, for ever:
20 such clients were all still held after 70 s, and 300 took `/health` down with "Too many open
files". Here every request must arrive whole, head and body, within `timeout_s` of its first byte
(or of the connection opening); a connection beyond `max_connections` is answered 503 and closed
at once; and uvicorn's 400 for a malformed request is JSON like every other answer.
"""

import asyncio
import json
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def connection_cap() -> int:
    """Open connections allowed, and as many accepted at once (asyncio accepts up to the listen
    backlog in one go, before any is turned away): together well inside the file descriptor limit,
    with 64 left for the process's own files."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(8, min(1000, ((soft if soft != resource.RLIM_INFINITY else 4096) - 64) // 2))


def raw_response(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, written without h11."""
    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def protocol(timeout_s: float, max_connections: int) -> type:
    """The protocol class uvicorn runs (`Config(http=...)`), with these limits."""

    class TimedH11Protocol(H11Protocol):
        timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(raw_response(503, "Service Unavailable",
                                             f"over {max_connections} open connections; try again"))
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                self._disarm()  # head and body are in

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self.transport.write(raw_response(400, "Bad Request", "not a valid HTTP/1.1 request"))
            self.transport.close()

        def _arm(self) -> None:
            self._disarm()
            self.timer = self.loop.call_later(timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def _too_slow(self) -> None:
            self.timer = None
            if not self.transport.is_closing():
                self.transport.close()  # the app, if it waits for the body, is told the client left

    return TimedH11Protocol

"""SIGINT and SIGTERM as a request to stop at the next safe point instead of at once.

The first signal is noted (`requested()` returns its number) and training stops at the end of
the current batch, after saving `last.ckpt`. A second signal stops at once (KeyboardInterrupt).
"""

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []
_previous: dict[int, object] = {}


def _handle(signum: int, frame: FrameType | None) -> None:
    if _received:
        raise KeyboardInterrupt  # asked twice: stop now
    _received.append(signum)
    log.warning("received %s: stopping after the current batch and saving last.ckpt "
                "(send it again to stop at once)", signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM to the stop request (again, if someone replaced the handlers).

    Only the main thread may set handlers; elsewhere (a launcher's worker thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not _handle:
            _previous.setdefault(signum, current)
            signal.signal(signum, _handle)


def restore() -> None:
    """Put back the handlers that were there before `install()`; forget any request."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()
    _received.clear()


def requested() -> int | None:
    """The number of the signal that asked the run to stop, or None."""
    return _received[0] if _received else None

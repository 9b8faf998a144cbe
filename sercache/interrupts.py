"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT lands. When that is inside a
finaliser or a weakref callback (garbage collection, at any bytecode), the exception is printed as "Exception ignored"
and dropped, and the work runs on to the end as if nothing had been pressed. ``remembered_interrupts()`` installs a
SIGINT handler that also records the signal, and long loops call ``stop_if_interrupted()`` at their safe points
(between batches, between epochs), so that a swallowed Ctrl-C still stops the work there, its finished part kept.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_pending = False  # a SIGINT arrived inside remembered_interrupts() and has not stopped anything yet


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextmanager
def remembered_interrupts() -> Iterator[None]:
    """Within the block, a SIGINT raises KeyboardInterrupt as usual and is also remembered (main thread only)."""
    global _pending
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
            signal.SIG_IGN, None):  # started with SIGINT ignored (nohup, &): it stays ignored
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending = False


def stop_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived and was swallowed on its way (see the module's notes)."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt

"""Process-wide Ctrl-C handling for a sweep, in one place.

Two things stand between a user's Ctrl-C and a clean stop after the point in progress:

- CPython runs signal handlers wherever the main thread happens to be, garbage
  collector finalizers included, and a KeyboardInterrupt raised inside a finalizer
  is printed and dropped. :class:`Interrupts` remembers the Ctrl-C as well as
  raising it, and the sweep checks between points.
- Arrow swaps in its own SIGINT handler while it reads or writes parquet, and a
  Ctrl-C that lands in a write it cannot cancel is lost. It is turned off while a
  sweep runs and turned back on afterwards.
"""
from __future__ import annotations

import signal
import threading
from typing import Any


class Interrupts:
    """Context manager for a sweep: remembers Ctrl-C, keeps Arrow's handler out of the way."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        import pyarrow

        pyarrow.enable_signal_handlers(False)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came, even one that CPython dropped."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        import pyarrow

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        pyarrow.enable_signal_handlers(True)

"""Progress reporting and cancellation shared by the GUIs and the command line.

A workflow takes ``progress: ProgressCallback | None`` and ``cancel: CancelToken | None``.
It calls ``report(progress, fraction, message)`` between steps and ``cancel.raise_if_cancelled()``
before every expensive step, so a cancelled run stops early and writes nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional

from .errors import Cancelled

#: ``callback(fraction in [0, 1], message)``
ProgressCallback = Callable[[float, str], None]


class CancelToken:
    """A thread-safe flag a GUI sets and a workflow polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep until cancelled or ``timeout`` seconds passed; whether it was cancelled."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def check_cancel(cancel: Optional[CancelToken]) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set (``None`` never cancels)."""
    if cancel is not None:
        cancel.raise_if_cancelled()


def report(progress: Optional[ProgressCallback], fraction: float, message: str = "") -> None:
    """Call ``progress`` with ``fraction`` clipped to [0, 1]; ``None`` reports nothing."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def scaled(progress: Optional[ProgressCallback], start: float, stop: float) -> Optional[ProgressCallback]:
    """A callback mapping a sub-step's [0, 1] onto [start, stop] of ``progress``."""
    if progress is None:
        return None

    def sub(fraction: float, message: str) -> None:
        progress(start + (stop - start) * min(1.0, max(0.0, fraction)), message)

    return sub


class ConsoleProgress:
    """A one-line text progress bar on stderr for the command line.

    On a terminal (or with ``force``) the bar is redrawn in place. Elsewhere (a log file, ``make
    models``, a batch job) a plain line ``[ 12.5%] message`` is written at most every
    ``log_every`` seconds, the first one ``log_every`` seconds after the start, so a training
    that runs for an hour shows where it is while a command of a few seconds writes nothing
    but its result. ``log_every=None`` keeps such a stream silent."""

    #: the bar whose line is drawn but not yet ended (see :func:`end_progress_line`)
    _open: "Optional[ConsoleProgress]" = None

    def __init__(self, stream=None, width: int = 30, force: bool = False,
                 log_every: Optional[float] = 60.0) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = force or getattr(self.stream, "isatty", lambda: False)()
        self.log_every = log_every
        self._last = 0.0 if self.enabled else time.monotonic()

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if not self.enabled:
            if self.log_every is not None and fraction < 1.0 and now - self._last >= self.log_every:
                self._last = now
                self.stream.write(f"[{100 * fraction:5.1f}%] {message}\n")
                self.stream.flush()
            return
        if fraction < 1.0 and now - self._last < 0.1:
            return
        self._last = now
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {100 * fraction:5.1f}% {message[:60]:<60}")
        if fraction >= 1.0:
            self.stream.write("\n")
            ConsoleProgress._open = None
        else:
            ConsoleProgress._open = self
        self.stream.flush()


def end_progress_line() -> None:
    """End a progress bar's line left open by a failed or cancelled step, so the error
    message that follows starts on a line of its own."""
    bar = ConsoleProgress._open
    if bar is not None:
        ConsoleProgress._open = None
        bar.stream.write("\n")
        bar.stream.flush()


def print_warnings(messages) -> None:
    """Each warning for the user on its own stderr line (``warning: ...``), after any progress bar."""
    messages = list(messages or [])
    if messages:
        end_progress_line()
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)

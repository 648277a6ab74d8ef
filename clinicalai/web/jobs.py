"""Long work off the server loop, results back on it.

A panel's Run button starts :class:`Job`: ``compute(progress, cancel)`` runs in a worker
thread (the engine, on ``Volume`` objects: no MRML there), progress is forwarded to the page
through the server's event loop, and ``apply(result)`` runs on that loop, where MRML nodes
may be created and views re-rendered. Cancel sets the shared
:class:`~clinicalai.progress.CancelToken`; the workflow stops at its next step and ``apply``
is never called, so the scene stays as it was.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ClinicalAIError
from ..progress import CancelToken

log = logging.getLogger(__name__)


@dataclass
class JobStatus:
    running: bool = False
    fraction: float = 0.0
    message: str = ""
    error: str = ""
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


class Job:
    """One background run.

    :param compute: ``compute(progress, cancel) -> result`` (worker thread)
    :param apply: ``apply(result)`` (server loop)
    :param on_status: ``on_status(JobStatus)`` (server loop) after every change
    """

    def __init__(
        self,
        compute: Callable[[Callable[[float, str], None], CancelToken], Any],
        apply: Callable[[Any], None],
        on_status: Callable[[JobStatus], None],
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        self._compute = compute
        self._apply = apply
        self._on_status = on_status
        self._loop = loop or asyncio.get_event_loop()
        self.cancel_token = CancelToken()
        self.status = JobStatus()
        self._thread: Optional[threading.Thread] = None
        self._last_report = 0.0
        self.done = threading.Event()

    def start(self) -> "Job":
        self.status = JobStatus(running=True, message="starting")
        self._on_status(self.status)
        self._thread = threading.Thread(target=self._run, name="clinicalai-web-job", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_token.cancel()

    @property
    def running(self) -> bool:
        return self.status.running

    def _post(self, fn: Callable[[], None]) -> None:
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed: the server is stopping
            pass

    def _progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_report < 0.1:  # at most ~10 page updates a second
            return
        self._last_report = now

        def update() -> None:
            if self.status.running:
                self.status.fraction, self.status.message = float(fraction), message
                self._on_status(self.status)

        self._post(update)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            result = self._compute(self._progress, self.cancel_token)
        except ClinicalAIError as exc:  # Cancelled included; the message is bound now (exc dies with the block)
            message = str(exc)
            self._post(lambda: self._finish(error=message, started=started))
            return
        except Exception as exc:  # a bug: keep the server alive, say what happened
            log.exception("background job failed")
            message = f"internal error: {type(exc).__name__}: {exc}"
            self._post(lambda: self._finish(error=message, started=started))
            return

        def apply() -> None:
            if self.cancel_token.cancelled:
                self._finish(error="cancelled by the user; nothing was changed", started=started)
                return
            try:
                self._apply(result)
            except ClinicalAIError as exc:
                self._finish(error=str(exc), started=started)
                return
            except Exception as exc:
                log.exception("applying results failed")
                self._finish(error=f"internal error: {type(exc).__name__}: {exc}", started=started)
                return
            self._finish(error="", started=started)

        self._post(apply)

    def _finish(self, error: str, started: float) -> None:
        self.status.running = False
        self.status.error = error
        self.status.seconds = time.monotonic() - started
        if not error:
            self.status.fraction, self.status.message = 1.0, "done"
        else:
            self.status.message = error
        self._on_status(self.status)
        self.done.set()

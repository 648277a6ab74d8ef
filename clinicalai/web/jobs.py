"""Long work off the server loop, results back on it: the browser's side of the one
background runner (:class:`clinicalai.mrml.runner.BackgroundTask`).

A panel's Run button starts :class:`Job`: ``compute(progress, cancel)`` runs in a worker
thread (the engine, on ``Volume`` objects: no MRML there), progress is posted to the server's
asyncio loop (at most ~10 page updates a second) and ``apply(result)`` runs on that loop,
where MRML nodes may be created and views re-rendered. Cancel sets the shared
:class:`~clinicalai.progress.CancelToken`; the workflow stops at its next step and ``apply``
is never called, so the scene stays as it was. Errors become one line for the page.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ClinicalAIError
from ..mrml.runner import BackgroundTask
from ..progress import CancelToken

log = logging.getLogger(__name__)

#: the least time between two progress updates sent to the page (seconds)
PROGRESS_INTERVAL_S = 0.1


@dataclass
class JobStatus:
    running: bool = False
    fraction: float = 0.0
    message: str = ""
    error: str = ""
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


def error_line(error: BaseException) -> str:
    """A failed job's one line for the page: an engine error's own message (``Cancelled``
    included), anything else as an internal error (logged with its traceback)."""
    if isinstance(error, ClinicalAIError):
        return str(error)
    log.error("background job failed", exc_info=(type(error), error, error.__traceback__))
    return f"internal error: {type(error).__name__}: {error}"


class Job:
    """One background run on the server loop.

    :param compute: ``compute(progress, cancel) -> result`` (worker thread)
    :param apply: ``apply(result)`` (server loop)
    :param on_status: ``on_status(JobStatus)`` (server loop) after every change
    :param loop: the server's event loop (default: the current one)
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
        self.task: Optional[BackgroundTask] = None

    @property
    def done(self) -> threading.Event:
        """Set once the job is over (its status sent with ``running`` false)."""
        return self.task.done if self.task is not None else threading.Event()

    def start(self) -> "Job":
        self.status = JobStatus(running=True, message="starting")
        self._on_status(self.status)
        self.task = BackgroundTask(
            self._compute, self._apply, name="clinicalai-web-job", post=self._loop.call_soon_threadsafe,
            on_change=self._changed, token=self.cancel_token, min_interval_s=PROGRESS_INTERVAL_S,
        )
        return self

    def cancel(self) -> None:
        self.cancel_token.cancel()

    @property
    def running(self) -> bool:
        return self.status.running

    def _changed(self, task: BackgroundTask) -> None:
        """The task's news on the loop: progress while it runs, then its outcome."""
        if not task.over:
            if self.status.running:
                self.status.fraction, self.status.message = task.fraction, task.message
                self._on_status(self.status)
            return
        self.status.running = False
        self.status.error = "" if task.error is None else error_line(task.error)
        self.status.seconds = time.monotonic() - self.status.started
        if not self.status.error:
            self.status.fraction, self.status.message = 1.0, "done"
        else:
            self.status.message = self.status.error
        self._on_status(self.status)

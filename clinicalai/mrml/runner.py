"""One background runner for both GUIs: the engine in a worker thread while the GUI stays
responsive, its result applied to the scene on the GUI's main thread, and a cancel that
applies nothing.

How the main thread learns that the work is over is the one thing the GUIs do differently:

* desktop Slicer polls: a ``qt.QTimer`` calls :meth:`BackgroundTask.poll`
  (``clinicalai.desktop.PanelRunner`` drives it);
* the browser app is told: it passes ``post`` (``loop.call_soon_threadsafe`` of the trame
  server's asyncio loop), and the task posts its progress and its completion to that loop
  (``clinicalai.web.jobs.Job``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar

from ..progress import CancelToken, ProgressCallback, check_cancel
from .scene import scene_transaction

if TYPE_CHECKING:  # pragma: no cover
    from .workflow import WorkflowLogic

V = TypeVar("V")  # what the work returns
R = TypeVar("R")  # what applying it returns

#: ``post(fn)``: have ``fn()`` called soon on the GUI's main thread; called from the worker
#: thread (``asyncio.AbstractEventLoop.call_soon_threadsafe`` is one)
PostToMain = Callable[[Callable[[], None]], None]
#: ``work(progress, cancel) -> value``: no MRML (any thread)
Work = Callable[[ProgressCallback, CancelToken], V]


class BackgroundTask(Generic[V, R]):
    """Work in a worker thread, its result applied on the main thread.

    Args:
        work: ``work(progress, cancel) -> value``; no MRML (any thread). Reports progress
            ``(fraction in [0, 1], message)`` and stops with ``Cancelled`` on cancel.
        apply: ``apply(value) -> result`` on the main thread (result nodes); not called after a
            cancel or an error, and nodes it added are removed when it raises.
        scene: the scene ``apply`` changes (for the transaction); ``None`` = no transaction.
        name: the worker thread's name.
        post: how the worker hands calls to the main thread; ``None``: nobody is told, the
            GUI polls (:meth:`poll`).
        on_change: ``on_change(task)`` on the main thread after a progress report (at most
            every ``min_interval_s`` seconds, and always at 1.0) and once the task is over
            (:attr:`over`); only with ``post``.
        token: the cancel token (default: a new one).
        min_interval_s: the least time between two progress posts (keeps a page responsive).

    Attributes:
        fraction, message: the latest progress report (for a progress bar).
        result: what ``apply`` returned, once done.
        error: the exception that stopped the task (``Cancelled`` after :meth:`cancel`).
        done: set once the task is over (result applied, or error set).
    """

    def __init__(self, work: "Work[V]", apply: Callable[[V], R], scene: Any = None, name: str = "ClinicalAI task",
                 post: Optional[PostToMain] = None, on_change: Optional[Callable[["BackgroundTask[V, R]"], None]] = None,
                 token: Optional[CancelToken] = None, min_interval_s: float = 0.0) -> None:
        self.token = token if token is not None else CancelToken()
        self.fraction, self.message = 0.0, "starting"
        self.result: Optional[R] = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self._over = False
        self._work_fn, self._apply_fn, self._scene = work, apply, scene
        self._post, self._on_change, self._min_interval_s = post, on_change, min_interval_s
        self._last_post = 0.0
        self._value: Optional[V] = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- worker thread
    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message
        if self._post is None or self._on_change is None:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_post < self._min_interval_s:
            return
        self._last_post = now
        self._send(self._changed)

    def _work(self) -> None:
        try:
            self._value = self._work_fn(self._progress, self.token)
        except BaseException as exc:  # handed to the main thread by poll() / post
            self.error = exc
        if self._post is not None:
            self._send(self._complete)

    def _send(self, fn: Callable[[], None]) -> None:
        try:
            self._post(fn)
        except RuntimeError:  # the main loop is closed: the GUI is going away
            pass

    # ---------------------------------------------------------------- main thread
    def _changed(self) -> None:
        if not self.over and self._on_change is not None:
            self._on_change(self)

    def _apply(self) -> R:
        check_cancel(self.token)
        if self._scene is None:
            return self._apply_fn(self._value)
        with scene_transaction(self._scene):
            return self._apply_fn(self._value)

    def _complete(self) -> None:
        """Apply the value (once, unless the work failed or was cancelled) and mark the task over."""
        if self.over:
            return
        if self.error is None:
            try:
                self.result = self._apply()
            except BaseException as exc:
                self.error = exc
        self._over = True
        try:
            if self._on_change is not None:
                self._on_change(self)
        finally:
            self.done.set()  # after the GUI heard of it: a waiter sees the final state

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def over(self) -> bool:
        """Whether the task is over (result applied, or :attr:`error` set) on the main thread."""
        return self._over

    @property
    def running(self) -> bool:
        return not self.over and self.error is None

    def poll(self, wait: float = 0.0) -> bool:
        """``True`` once the task is over (result applied, or :attr:`error` set); applies the
        result on the calling (main) thread when the work is done. For GUIs without ``post``."""
        if wait > 0:
            self._thread.join(wait)
        if self._thread.is_alive():
            return False
        self._complete()
        return True


class BackgroundRun(BackgroundTask[Any, Any]):
    """A module run as a :class:`BackgroundTask`: ``prepare`` in the constructor (main
    thread), ``compute`` (the engine) in the worker thread, ``finish`` once the work is done.

    Attributes:
        params: the parameters with the output node IDs, once done (also :attr:`result`).
    """

    def __init__(self, logic: "WorkflowLogic[Any, Any, Any]", params: Any, post: Optional[PostToMain] = None,
                 on_change: Optional[Callable[[BackgroundTask[Any, Any]], None]] = None, min_interval_s: float = 0.0) -> None:
        self.logic = logic
        self.inputs = logic.prepare(params)
        self._request = params
        super().__init__(
            lambda progress, cancel: logic.compute(self.inputs, progress, cancel),
            lambda result: logic.finish(self._request, self.inputs, result, self.token),
            scene=None,  # finish is transactional itself
            name=f"ClinicalAI {logic.module_name}",
            post=post, on_change=on_change, min_interval_s=min_interval_s,
        )

    @property
    def params(self) -> Any:
        return self.result

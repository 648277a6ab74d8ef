"""The Apply / Cancel / progress cycle of a desktop module panel, one for the three Widgets,
with the question asked before a TorchScript model file nobody trusted yet runs."""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable, Optional, Set, Tuple

from ..errors import Cancelled, ClinicalAIError, FitNotConfirmed, InputError
from ..mrml.runner import BackgroundTask

log = logging.getLogger(__name__)


def _is_untrusted_model(error: Optional[BaseException]) -> bool:
    try:
        from ..models import UntrustedModelError  # heavy (pydantic); a fresh Slicer has none yet
    except ImportError:
        return False
    return isinstance(error, UntrustedModelError)


def trust_question(error: Any) -> str:
    """What the desktop panels ask before running a TorchScript file nobody trusted yet
    (an :class:`~clinicalai.models.UntrustedModelError`): its name, file and sha256."""
    return (
        f"Model: {error.name}\nFile: {error.path}\nsha256: {error.sha256}\n\n"
        "This file is TorchScript: it contains code that will run when it is loaded, with your "
        "permissions (it could read or change your files). Trust it only if you know where it comes from.\n\n"
        "Trust this file? The answer is remembered for this exact file (by its sha256); "
        "a changed file will be asked about again."
    )


def error_report(error: BaseException) -> Tuple[str, str]:
    """``(message, details)`` of a failed run for ``slicer.util.errorDisplay``: the message of
    an engine error as it is (it is written for the user), any other exception as
    "Unexpected error: ..."; the details are the traceback (also logged)."""
    message = str(error) if isinstance(error, ClinicalAIError) else f"Unexpected error: {type(error).__name__}: {error}"
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return message, details


class PanelRunner:
    """The Apply / Cancel / progress cycle of a module panel, one for the three Widgets.

    It follows one :class:`~clinicalai.mrml.runner.BackgroundTask` at a time: a timer the
    Widget passes in (a ``qt.QTimer``) calls :meth:`poll`, which moves the progress bar and
    the status line, and once the task is over re-enables the panel and reports the outcome:
    "Cancelled; nothing was changed.", an error dialog (the engine's message, the traceback as
    details, also logged) and "Failed; nothing was changed.", or ``on_done(task)``.

    Args:
        module_name: the module, in the log line of a failure.
        ui: the panel's widgets; it must have ``applyButton``, ``cancelButton``,
            ``progressBar`` (0-100) and ``statusLabel``.
        busy_widgets: names of more ``ui`` widgets disabled while a task runs.
        on_finished: called after every task, whatever its outcome (e.g. re-check Apply).
        show_error: ``show_error(message, details)``; default ``slicer.util.errorDisplay``.
        confirm: ``confirm(question) -> bool``, asked before trusting a TorchScript model file
            (see :meth:`start`'s ``rerun``); default ``slicer.util.confirmYesNoDisplay``.

    The browser app never asks to trust a file (it loads only the server's models, see
    ``clinicalai.web.security.OfferedChoices``) and follows its tasks with
    ``clinicalai.web.jobs.Job``.
    """

    def __init__(self, module_name: str, ui: Any, busy_widgets: Tuple[str, ...] = (), on_finished: Optional[Callable[[], None]] = None,
                 show_error: Optional[Callable[[str, str], None]] = None, confirm: Optional[Callable[[str], bool]] = None) -> None:
        self.module_name = module_name
        self.ui = ui
        self.busy_widgets = ("applyButton", *busy_widgets)
        self.on_finished = on_finished
        self.show_error = show_error
        self.confirm = confirm
        self.task: Optional[BackgroundTask] = None
        self._on_done: Any = None
        self._timer: Any = None
        self._rerun: Optional[Callable[[], BackgroundTask]] = None
        self._trusted_in_this_run: Set[str] = set()

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self, task: BackgroundTask, on_done: Callable[[BackgroundTask], None], timer: Any, interval_ms: int = 100,
              rerun: Optional[Callable[[], BackgroundTask]] = None) -> None:
        """Follow ``task``; ``on_done(task)`` once it succeeded (main thread, result applied).

        ``rerun``: ``() -> task`` making the same run again. With it, a run stopped because a
        model file is TorchScript nobody trusted yet (:class:`~clinicalai.models.UntrustedModelError`)
        asks the user once, with the model's name and the file's sha256; on yes the trust is
        recorded by that sha256 in the user model folder (so the next run does not ask, and a
        changed file asks again) and the run starts over; on no the error is reported as any.
        """
        if self.task is not None:
            task.cancel()
            raise InputError(f"{self.module_name} is already running")
        self.task, self._on_done, self._timer = task, on_done, timer
        self._rerun, self._trusted_in_this_run = rerun, set()
        self._set_running(True)
        timer.setInterval(interval_ms)
        timer.connect("timeout()", self.poll)
        timer.start()

    def start_checked(self, make_run: Callable[[bool], BackgroundTask], on_done: Callable[[BackgroundTask], None],
                      timer: Any, interval_ms: int = 100) -> bool:
        """:meth:`start` a run made by ``make_run(confirmed_fit)``, asking first when the input
        does not fit the model: ``make_run(False)`` (its ``prepare``) raising
        :class:`~clinicalai.errors.FitNotConfirmed` shows its problems with OK / Cancel
        (``slicer.util.confirmOkCancelDisplay``, or ``confirm``); OK makes the run again with
        ``confirmed_fit=True`` (and so does a rerun after a trust question), Cancel changes
        nothing. ``True`` when a run was started."""
        confirmed = False
        try:
            task = make_run(False)
        except FitNotConfirmed as err:
            if not self._ask_fit(str(err)):
                self.ui.statusLabel.text = "Not run; nothing was changed."
                return False
            confirmed = True
            task = make_run(True)
        self.start(task, on_done, timer, interval_ms, rerun=lambda: make_run(confirmed))
        return True

    def _ask_fit(self, message: str) -> bool:
        if self.confirm is not None:
            return bool(self.confirm(message))
        import slicer

        return bool(slicer.util.confirmOkCancelDisplay(message, windowTitle="Input does not fit the model"))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    def poll(self) -> bool:
        """One timer tick; ``True`` once the task is over (and the timer stopped)."""
        task = self.task
        if task is None:
            return True
        self.ui.progressBar.value = int(100 * task.fraction)
        self.ui.statusLabel.text = task.message
        if not task.poll():
            return False
        self._timer.stop()  # also while a trust question is open: its event loop must not tick this
        error = task.error
        if self._rerun is not None and _is_untrusted_model(error):
            error = self._trust_and_rerun(error)
            if error is None:  # the same run again, followed by the same timer
                self._timer.start()
                return False
        self.task, self._timer = None, None
        self._set_running(False)
        if self.on_finished is not None:
            self.on_finished()
        self._report(task, error)
        return True

    def _report(self, task: BackgroundTask, error: Optional[BaseException]) -> None:
        """The outcome of a task that is over: its result handed on, or the status line (and
        for a failure the error dialog)."""
        if error is None:
            self.ui.statusLabel.text = "Done."
            self._on_done(task)
            return
        if isinstance(error, Cancelled):
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
            return
        message, details = error_report(error)
        log.error("%s failed:\n%s", self.module_name, details)
        if self.show_error is not None:
            self.show_error(message, details)
        else:
            import slicer

            slicer.util.errorDisplay(message, detailedText=details)
        self.ui.statusLabel.text = "Failed; nothing was changed."

    def _trust_and_rerun(self, error: Any) -> Optional[BaseException]:
        """Ask whether to trust the TorchScript file that stopped the run; on yes record it
        and start the run again. ``None`` when the new run is going on, else the error to
        report: the user said no, or recording / restarting failed."""
        from ..models import record_trust  # heavy (pydantic); only reached with the engine installed

        if error.sha256 in self._trusted_in_this_run:  # trusted a moment ago yet refused: never ask in a loop
            return error
        if not self._ask(trust_question(error)):
            return error
        try:
            record_trust(error.sha256, error.name, error.path)
            self._trusted_in_this_run.add(error.sha256)
            self.task = self._rerun()
        except Exception as exc:  # noqa: BLE001 - reported like any failed run
            return exc
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = f"{error.name} trusted; running again"
        log.info("%s: trusted TorchScript %s (sha256 %s)", self.module_name, error.path, error.sha256)
        return None

    def _ask(self, question: str) -> bool:
        if self.confirm is not None:
            return bool(self.confirm(question))
        import slicer

        return bool(slicer.util.confirmYesNoDisplay(question, windowTitle="Trust this model file?"))

    def _set_running(self, running: bool) -> None:
        for name in self.busy_widgets:
            getattr(self.ui, name).enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0

"""What every drawer panel shares: its state prefix, a Run / Cancel row with a progress bar,
and the background job plumbing (:class:`clinicalai.web.jobs.Job`).

A panel knows the app that holds it only as a :class:`PanelHost` (what it calls), so the
panels import nothing of :mod:`clinicalai.web.app`, which imports them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...errors import ClinicalAIError, FitNotConfirmed
from ...mrml.context import MRMLContext
from ...mrml.scene import restore_slice_views, slice_view_states
from ..jobs import Job, JobStatus
from ..security import DataRoot, OfferedChoices
from .common import mask_items, segmentation_items


class PanelHost(Protocol):
    """What the panels use of the browser app (``clinicalai.web.app.ClinicalAIWebApp``).

    Attributes:
        server, state: the trame server and its shared state.
        context: the scene and module logics (:class:`~clinicalai.mrml.context.MRMLContext`).
        choices: the choice lists offered to the page, to check what it sends back.
        config: the server's ``WebConfig``; data_root: the data folder the page may use.
        volume_node: the volume on show (``None`` before one is opened).
        slicer_app, layout_logic: trame-slicer's app and layout buttons.
        panels: the panels by key; prober: the upload file prober.
        segmentation_listeners: ``listener(segmentation_node)`` after an edit.
    """

    server: Any
    state: Any
    context: MRMLContext
    choices: OfferedChoices
    config: Any
    data_root: DataRoot
    volume_node: Any
    slicer_app: Any
    layout_logic: Any
    panels: Dict[str, Any]
    prober: Any
    segmentation_listeners: List[Any]

    def event_loop(self) -> asyncio.AbstractEventLoop: ...

    def render_views(self) -> None: ...

    def error(self, message: str, tool: str = "data") -> None: ...

    def info(self, message: str, tool: str = "data") -> None: ...

    def show_volume(self, node: Any) -> None: ...

    def edit_segmentation(self, segmentation_node: Any, open_editor: bool = True) -> None: ...


class Panel:
    key = "panel"
    title = "Panel"
    #: slice views a run of this panel shows that start where Red is (same slice and zoom)
    views_like_red: tuple = ()

    def __init__(self, app: PanelHost) -> None:
        self.app = app
        self.job: Optional[Job] = None
        #: monotonic seconds when the last result was applied (the benchmark reads it)
        self.applied_at = 0.0
        s = self.state
        s[self.k("running")] = False
        s[self.k("progress")] = 0.0
        s[self.k("status")] = ""
        s[self.k("error")] = ""
        s[self.k("seconds")] = 0.0
        s[self.k("runs")] = 0
        # the input-fit question (issue 16 item 6): what the page shows; the confirmation
        # itself is _pending_fit, on the server only (a page setting a key cannot skip the check)
        s[self.k("fit_dialog")] = False
        s[self.k("fit_problems")] = []
        self._pending_fit: Optional[Tuple[Any, Callable[..., None]]] = None

    # state helpers --------------------------------------------------------------
    @property
    def state(self):
        return self.app.state

    @property
    def server(self):
        return self.app.server

    def k(self, name: str) -> str:
        """The state key of ``name`` in this panel (``ca_<panel>_<name>``)."""
        return f"ca_{self.key}_{name}"

    def set(self, **values: Any) -> None:
        with self.state:
            for name, value in values.items():
                self.state[self.k(name)] = value

    def get(self, name: str) -> Any:
        return self.state[self.k(name)]

    # server-side validation of what the page sends (one place: security.OfferedChoices) -----
    def offer(self, **lists: Any) -> None:
        """Put choice lists in the page *and* record them on the server, so that a value chosen
        from them can be checked against what was really offered (:meth:`choice`)."""
        self.set(**{name: self.app.choices.offer(self.k(name), items) for name, items in lists.items()})

    def choice(self, name: str, offered: str, what: str) -> Any:
        """The page's value of ``name`` if it is one of the choices the server offered in
        ``offered``; else :class:`~clinicalai.web.security.AccessError` (one sentence).
        An empty value ("" or none: the server's default) is always accepted, as ""."""
        value = self.get(name)
        if value in ("", None):
            return ""
        return self.app.choices.check(self.k(offered), value, what)

    def choices(self, name: str, offered: str, what: str) -> list:
        """Like :meth:`choice` for a multiple selection (a list)."""
        return self.app.choices.check_many(self.k(offered), self.get(name) or [], what)

    def number(self, name: str, what: str, lo: float = float("-inf"), hi: float = float("inf")) -> float:
        """The page's value of ``name`` as a finite number in [lo, hi], or one clear error."""
        value = self.get(name)
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ClinicalAIError(f"{what} must be a number, got {str(value)[:40]!r}") from None
        if not (lo <= x <= hi):
            raise ClinicalAIError(f"{what} must be between {lo:g} and {hi:g}, got {x:g}")
        return x

    # UI -----------------------------------------------------------------------
    def build_ui(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def run_row(self, run: Callable[[], None], label: str = "Run") -> None:
        """Run / Cancel buttons, a progress bar and the panel's status / error line."""
        with html.Div(classes="d-flex align-center my-2"):
            v3.VBtn(
                label,
                id=f"{self.key}-run",
                color="primary",
                click=run,
                disabled=(f"{self.k('running')} || !ca_volume_loaded",),
                classes="mr-2",
            )
            v3.VBtn(
                "Cancel",
                id=f"{self.key}-cancel",
                click=self.cancel,
                disabled=(f"!{self.k('running')}",),
                variant="tonal",
            )
        v3.VProgressLinear(
            model_value=(f"100 * {self.k('progress')}",),
            height=6,
            color="primary",
            id=f"{self.key}-progress",
            classes="mb-1",
        )
        html.Div(
            f"{{{{ {self.k('status')} }}}}",
            id=f"{self.key}-status",
            classes="text-caption",
        )
        # this panel's error, in this panel only, until closed, the next run or another volume
        v3.VAlert(
            v_if=(self.k("error"),),
            text=(self.k("error"),),
            type="error",
            density="compact",
            closable=True,
            click_close=f"{self.k('error')} = ''",
            id=f"{self.key}-error",
            classes="text-caption my-1",
        )
        self.fit_dialog()

    def fit_dialog(self) -> None:
        """The question asked when the input does not fit the model: its problems, "Run
        anyway" and "Cancel" (one per panel; only the panel that asked has it open)."""
        with v3.VDialog(model_value=(self.k("fit_dialog"),), persistent=True, max_width=520):
            with v3.VCard(id="fit-dialog"):
                v3.VCardTitle("The input may not fit the model")
                with v3.VCardText():
                    html.Div("The model's answer may mean nothing for this input:", classes="mb-2")
                    with html.Ul(classes="ml-4"):
                        html.Li("{{ p }}", v_for=f"p in {self.k('fit_problems')}", key="p", classes="fit-problem")
                with v3.VCardActions():
                    v3.VSpacer()
                    v3.VBtn("Cancel", id="fit-cancel", variant="tonal", click=self.cancel_fit)
                    v3.VBtn("Run anyway", id="fit-run-anyway", color="warning", click=self.run_anyway)

    def prepare_or_ask(self, params: Any, action: Callable[..., None], confirmed: bool = False) -> Tuple[Any, Any]:
        """``(params, inputs)`` of ``self.logic.prepare``; ``(params, None)`` when the input does
        not fit the model and the user has not confirmed: the dialog is open, and the server
        keeps ``params`` with ``action`` (the panel method that asked) as the pending question.

        ``confirmed`` counts only when the pending question is for these very parameters
        (same volume, models, options): a "Run anyway" for other inputs asks again.
        Raises the logic's other errors (:class:`ClinicalAIError`)."""
        pending, self._pending_fit = self._pending_fit, None
        if confirmed and pending is not None and pending[0] == params and pending[1] == action:
            params = dataclasses.replace(params, confirmed_fit=True)
        try:
            return params, self.logic.prepare(params)
        except FitNotConfirmed as err:
            self._pending_fit = (params, action)
            self.set(fit_dialog=True, fit_problems=[p.message for p in err.problems])
            return params, None

    def run_anyway(self) -> None:
        """"Run anyway": the pending action again, confirmed (asks again without one)."""
        pending = self._pending_fit
        self.set(fit_dialog=False)
        if pending is None:
            self.set(error="nothing to confirm: run again")
            return
        pending[1](confirmed=True)

    def cancel_fit(self) -> None:
        """"Cancel": the question goes, nothing runs, nothing in the scene changes."""
        self._pending_fit = None
        self.set(fit_dialog=False, fit_problems=[], status="not run; nothing was changed")

    # jobs ----------------------------------------------------------------------
    def start_job(self, compute: Callable, apply: Callable[[Any], None]) -> None:
        if self.job is not None and self.job.running:
            return
        self.set(error="")
        # a result belongs to the volume it was computed on: one that comes back after another
        # volume was opened is not shown over it
        volume = self.app.volume_node

        def applied(result: Any) -> None:
            if self.app.volume_node is not volume:
                self.set(status="result discarded: another volume was opened during the run")
                return
            views = slice_view_states(self.app.context.scene)
            apply(result)
            # the user's slice, zoom and pan stay; the views of a layout the run opens start like Red
            restore_slice_views(self.app.context.scene, views, follow=self.views_like_red)
            self.app.render_views()
            self.applied_at = time.monotonic()
            self.set(runs=self.get("runs") + 1)

        self.job = Job(compute, applied, self._on_status, loop=self.app.event_loop())
        self.job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_status(self, status: JobStatus) -> None:
        self.set(
            running=status.running,
            progress=status.fraction,
            status=status.message if not status.error else "",
            error=status.error,
            seconds=round(status.seconds, 2),
        )

    # scene events -------------------------------------------------------------
    #: the state key (without the panel prefix) of the list of the scene's segmentations its
    #: mask choosers offer; "" = the panel has none
    segmentation_choices = ""
    #: the state keys of the panel's mask choosers (brain mask, reference lesion), if its
    #: choosers are those: they then offer the label maps and segmentations of the image on
    #: show only, ``masks_note`` says why, and a choice no longer offered is dropped
    mask_keys: Tuple[str, ...] = ()

    def refresh_inputs(self) -> None:
        """Offer the scene's segmentations (a volume or a segmentation was opened, one added)."""
        if self.segmentation_choices and self.mask_keys:
            items, note = mask_items(self.app.context.scene, self.app.volume_node)
            self.offer(**{self.segmentation_choices: items})
            offered = {item["value"] for item in items}
            self.set(masks_note=note, **{key: "" for key in self.mask_keys if self.get(key) not in offered})
        elif self.segmentation_choices:
            self.offer(**{self.segmentation_choices: segmentation_items(self.app.context.scene)})

    def on_volume_changed(self, node: Any) -> None:
        """Another volume is shown: the panel's choosers offer its masks, and the panel's
        message (about the previous volume or run) goes, and so does a question about it."""
        self._pending_fit = None
        self.set(error="", fit_dialog=False, fit_problems=[])
        self.refresh_inputs()

    def on_segmentation_opened(self, relative: str, node: Any) -> None:
        """A mask (segmentation or label map node) was opened from ``relative``."""
        self.refresh_inputs()

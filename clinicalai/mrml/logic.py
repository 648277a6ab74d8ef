"""What the three module logics share: parameters in the scene, model loading, and runs in
three steps so a GUI can keep responsive and a failure changes nothing.

A run is ``prepare`` (main thread: read the input nodes into :class:`Volume` objects),
``compute`` (any thread: the engine, no MRML; reports progress, stops on cancel) and
``apply`` (main thread: result nodes, inside :func:`scene_transaction`). ``run`` does all
three; the desktop widget and the browser app call ``compute`` in a worker thread and
``apply`` back on the main thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Generic, Iterator, List, Optional, Tuple, Type, TypeVar

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check_cancel
from ..volume import Volume
from .context import MRMLContext
from .parameters import get_parameter_node, read_parameters, write_parameters
from .volumes import ijk_to_ras, node_to_volume, volume_grid_of_node

log = logging.getLogger(__name__)

P = TypeVar("P")


@contextlib.contextmanager
def scene_transaction(scene: Any) -> Iterator[None]:
    """Remove every node added inside the block when the block raises (cancel or failure),
    so a failed run leaves the scene as it was. Existing nodes must only be modified as the
    block's last step (after everything that can fail)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in reversed([n for n in added if n.GetID() not in before]):
            if scene.IsNodePresent(node):
                scene.RemoveNode(node)
        raise


def node_by_id(scene: Any, node_id: Optional[str], what: str, required: bool = True) -> Any:
    """The node with ``node_id``, or a clear :class:`InputError` naming ``what``."""
    node = scene.GetNodeByID(node_id) if node_id else None
    if node is None and required:
        raise InputError(f"no {what} is selected" if not node_id else f"the {what} ({node_id}) is no longer in the scene")
    return node


def resolve_model_path(path: str, default: str) -> Path:
    """The model a user chose (a path, or a bundled or user model's name), else the model named
    ``default``: the engine's one resolver, with its one error for an unknown name."""
    from ..models import resolve_model

    return resolve_model(path or default)


def card_summary(card: Any) -> Dict[str, Any]:
    """What the panels show of a model card (task, labels / classes, intended use, warning)."""
    return {
        "name": card.name,
        "version": card.version,
        "task": card.task,
        "labels": [lab.name for lab in card.labels],
        "classes": list(card.classes),
        "intended_use": card.intended_use,
        "synthetic_demo": bool(card.synthetic_demo),
        "warning": (
            "Synthetic demo model trained on phantoms: not for clinical use." if card.synthetic_demo else ""
        ),
        "validation": dict(card.validation),
    }


def read_model_card(path: "str | Path") -> Any:
    """The validated card of a model (file, MONAI bundle folder or name) without loading its
    weights: nothing of an untrusted model runs to show its card."""
    from ..models import read_model_card as engine_read_model_card

    return engine_read_model_card(path)[0]


def describe_model(path: str) -> Dict[str, Any]:
    """Card summary of a model file without loading its weights (for the model chooser)."""
    return card_summary(read_model_card(path))


def bundled_models(task: Optional[str] = None, default: Optional[str] = None) -> List[Dict[str, Any]]:
    """``[{"name", "path", "task", "synthetic_demo", "source"}]`` of the models known by name
    (bundled demo models, then the user's imported ones, ``source`` ``"bundled"`` / ``"user"``;
    optionally of one task), the model named ``default`` first so choosers start on the
    engine's default; ``path`` is the card or bundle folder. Empty while the engine's packages
    (pydantic) are not installed yet, so a panel still opens in a fresh Slicer and offers the
    installation on first use."""
    try:
        from ..models import known_models, read_model_card as engine_read_model_card
    except ImportError:
        return []

    out = []
    for entry in known_models():
        try:
            card = engine_read_model_card(entry.path)[0]
        except Exception:  # a broken card is skipped in the chooser, reported when chosen
            continue
        if task and card.task != task:
            continue
        out.append({"name": entry.name, "path": str(entry.path), "task": card.task,
                    "synthetic_demo": card.synthetic_demo, "source": entry.source})
    return sorted(out, key=lambda m: m["name"] != default)  # stable: the rest keep their order


#: the model chooser's last entry: the model comes from the file chooser beside it
MODEL_FILE_ITEM = "Model file below..."


def select_model_choice(combo: Any, path_edit: Any, path: str) -> None:
    """Put a panel's model chooser back on ``path`` (a bundled model's entry, or the file entry
    with ``path`` in the file chooser ``path_edit``); ``""`` leaves the default, already first.

    ``combo`` is a ``QComboBox`` filled from :func:`bundled_models` with the paths as item data
    (duck-typed: ``findData``, ``findText``, ``currentIndex``), ``path_edit`` a ``ctkPathLineEdit``.
    """
    if not path:
        return
    index = combo.findData(path)
    if index < 0:
        index = combo.findText(MODEL_FILE_ITEM)
        path_edit.currentPath = path
    combo.currentIndex = index


def device_choices() -> List[Dict[str, Any]]:
    """The device selector's entries: auto, cuda (with GPU name and free memory) when there is
    one, cpu."""
    try:
        from ..models import device_summary

        info = device_summary()
    except ImportError:  # no torch / pydantic yet (fresh Slicer): offered on first use
        return [{"value": "auto", "label": "auto (PyTorch not installed yet)"}, {"value": "cpu", "label": "CPU"}]
    gpu = ""
    if info["cuda"]:
        gpu = f"{info['name']}, {int(info['free_bytes']) / 2**30:.1f} GiB free"
    entries = [{"value": "auto", "label": f"auto ({gpu or 'CPU'})"}]
    if info["cuda"]:
        entries.append({"value": "cuda", "label": f"CUDA: {gpu}"})
    entries.append({"value": "cpu", "label": "CPU"})
    return entries


class ModelCache:
    """Loaded models by (path, device), so a second run does not reload weights.

    A model whose card or weights file changed on disk since it was loaded is loaded again:
    a re-trained model gives its new answer, and a replaced TorchScript file goes through the
    trust check again instead of running as the file that was trusted."""

    def __init__(self) -> None:
        self._models: Dict[Tuple[str, str], Tuple[Any, Any]] = {}

    def get(self, path: Path, device: str) -> Any:
        from ..models import load_model

        key = (str(Path(path).resolve()), device)
        stamp = _model_files_stamp(path)
        cached = self._models.get(key)
        if cached is None or cached[0] != stamp:
            self._models[key] = (stamp, load_model(path, device=device))
        return self._models[key][1]


def _model_files_stamp(path: "str | Path") -> Any:
    """Size and modification time of a model's card / bundle folder and weights file: what
    tells :class:`ModelCache` that the files changed (``None`` when they cannot be read:
    loading then reports why)."""
    from ..errors import ClinicalAIError
    from ..models import read_model_card

    try:
        _, weights = read_model_card(path)
        files = [Path(path), Path(weights)]
        return tuple((str(f), f.stat().st_ino, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
    except (ClinicalAIError, OSError):
        return None


def slice_center_ras(node: Any, k: int) -> Tuple[float, float, float]:
    """RAS position of the centre of slice ``k`` (third voxel axis) of a volume node."""
    grid = volume_grid_of_node(node)
    z, y, x = grid.shape
    if not 0 <= k < z:
        raise InputError(f"slice {k} is outside the volume (0..{z - 1})")
    ras = ijk_to_ras(grid) @ np.array([(x - 1) / 2.0, (y - 1) / 2.0, float(k), 1.0])
    return (float(ras[0]), float(ras[1]), float(ras[2]))


def jump_to_slice(scene: Any, node: Any, k: int) -> Tuple[float, float, float]:
    """Centre every slice view on slice ``k`` of ``node`` (a table row click); returns the RAS point."""
    import slicer

    r, a, s = slice_center_ras(node, k)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return (r, a, s)


def jump_to_voxel(scene: Any, grid: Any, kji: Tuple[int, int, int]) -> Tuple[float, float, float]:
    """Centre every slice view on voxel ``(k, j, i)`` of ``grid`` (a node's volume grid); the RAS point (mm)."""
    import slicer

    k, j, i = (int(v) for v in kji)
    r, a, s = (ijk_to_ras(grid) @ np.array([i, j, k, 1.0]))[:3]
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, float(r), float(a), float(s), slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return (float(r), float(a), float(s))


def jump_to_mask(scene: Any, grid: Any, mask_zyx: np.ndarray) -> Optional[Tuple[float, float, float]]:
    """Centre every slice view on a mask (a lesion VOI, a reference lesion) on ``grid``: on its
    voxel nearest to its centre of mass (a curved mask's centre can lie outside it). The RAS
    point (mm), or ``None`` (nothing moved) when the mask is empty."""
    voxels = np.argwhere(np.asarray(mask_zyx) > 0)  # (n, 3) as (k, j, i)
    if voxels.size == 0:
        return None
    centre = voxels.mean(axis=0)
    return jump_to_voxel(scene, grid, tuple(voxels[int(np.argmin(((voxels - centre) ** 2).sum(axis=1)))]))


class WorkflowLogic(Generic[P]):
    """Base of the module logics: parameter node, models and the prepare / compute / apply run."""

    module_name = ""
    parameters_class: Type[Any] = object

    def __init__(self, context: Optional[MRMLContext] = None) -> None:
        self.context = context or MRMLContext.from_slicer()
        self.models = ModelCache()

    @property
    def scene(self) -> Any:
        return self.context.scene

    # ---------------------------------------------------------------- parameters
    def parameter_node(self) -> Any:
        return get_parameter_node(self.scene, self.module_name)

    def get_parameters(self) -> P:
        return read_parameters(self.parameter_node(), self.parameters_class)

    def set_parameters(self, params: P) -> None:
        write_parameters(self.parameter_node(), params)

    # ---------------------------------------------------------------- runs
    def prepare(self, params: P) -> Dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def compute(self, inputs: Dict[str, Any], progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def apply(self, params: P, inputs: Dict[str, Any], result: Any) -> P:  # pragma: no cover
        raise NotImplementedError

    def run(self, params: Optional[P] = None, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> P:
        """Prepare, compute and apply; returns the parameters with the output node IDs (also
        stored in the parameter node). Raises the engine's errors (``Cancelled`` included)
        with the scene unchanged."""
        params = params if params is not None else self.get_parameters()
        inputs = self.prepare(params)
        result = self.compute(inputs, progress, cancel)
        return self.finish(params, inputs, result, cancel)

    def finish(self, params: P, inputs: Dict[str, Any], result: Any, cancel: Optional[CancelToken] = None) -> P:
        """The ``apply`` step, transactional; the GUI calls it on the main thread."""
        check_cancel(cancel)
        with scene_transaction(self.scene):
            params = self.apply(dataclasses.replace(params), inputs, result)
        self.set_parameters(params)
        return params

    def input_volume(self, node_id: Optional[str], what: str = "input volume") -> Tuple[Any, Volume]:
        node = node_by_id(self.scene, node_id, what)
        return node, node_to_volume(node)

    def output_name(self, input_node: Any, suffix: str) -> str:
        return f"{input_node.GetName()} {suffix}"


__all__ = [
    "BackgroundRun",
    "BackgroundTask",
    "ModelCache",
    "WorkflowLogic",
    "bundled_models",
    "card_summary",
    "card_text",
    "describe_model",
    "device_choices",
    "error_report",
    "jump_to_slice",
    "mask_from_node",
    "model_path_from_choice",
    "node_by_id",
    "resolve_model_path",
    "scene_transaction",
    "slice_center_ras",
    "trust_question",
    "warning_lines",
]


def mask_from_node(scene: Any, node_id: Optional[str], grid: Any, what: str) -> Optional[Volume]:
    """A 0/1 uint8 mask on ``grid`` from a segmentation, labelmap or scalar volume node
    (non-zero = inside); ``None`` when no node is chosen. A volume node on another grid is
    resampled (nearest neighbour) onto ``grid``."""
    from .segmentations import segmentation_to_labels

    node = node_by_id(scene, node_id, what, required=False)
    if node is None:
        return None
    if node.IsA("vtkMRMLSegmentationNode"):
        labels = segmentation_to_labels(node, grid)
    else:
        labels = node_to_volume(node)
        if not labels.same_grid(grid, atol=1e-4):
            from ..volume import resample_to_grid

            labels = resample_to_grid(labels, grid.grid if isinstance(grid, Volume) else grid, interpolator="nearest")
    mask = (np.asarray(labels.array) > 0).astype(np.uint8)
    if not mask.any():
        raise InputError(f"the {what} ({node.GetName()}) is empty")
    return labels.with_array(mask, modality="SEG", units="label")


def model_path_from_choice(path: str) -> str:
    """The model path for what a file dialog returned: a MONAI bundle's
    ``configs/metadata.json`` stands for its bundle folder."""
    p = Path(path)
    if p.name == "metadata.json" and p.parent.name == "configs":
        return str(p.parent.parent)
    return str(p)


def card_text(summary: Dict[str, Any]) -> str:
    """The model card as a few lines of HTML for a panel label (warning first, in red)."""
    import html

    lines = []
    if summary.get("warning"):
        lines.append(f"<b style='color:#c00'>{html.escape(summary['warning'])}</b>")
    lines.append(f"<b>{html.escape(summary['name'])}</b> {html.escape(summary.get('version', ''))} &mdash; {html.escape(summary['task'])}")
    if summary.get("labels"):
        lines.append("Labels: " + html.escape(", ".join(summary["labels"])))
    if summary.get("classes"):
        lines.append("Classes: " + html.escape(", ".join(summary["classes"])))
    if summary.get("intended_use"):
        lines.append("Intended use: " + html.escape(summary["intended_use"]))
    return "<br>".join(lines)


def warning_lines(warnings: Any) -> List[str]:
    """A run's warnings about its input (reader, model fit) as red HTML lines for a panel
    label, one per warning, escaped (they quote file and model names)."""
    import html

    return [f"<span style='color:#c00'>&#9888; {html.escape(str(w))}</span>" for w in (warnings or [])]


class BackgroundTask:
    """Work in a worker thread while the GUI stays responsive, its result applied to the scene
    on the main thread: the GUI's timer calls :meth:`poll`, which calls ``apply`` on the
    calling (main) thread inside :func:`scene_transaction` once ``work`` is done.

    Args:
        work: ``work(progress, cancel) -> value``; no MRML (any thread). Reports progress
            ``(fraction in [0, 1], message)`` and stops with ``Cancelled`` on cancel.
        apply: ``apply(value) -> result`` on the main thread (result nodes); not called after a
            cancel or an error, and nodes it added are removed when it raises.
        scene: the scene ``apply`` changes (for the transaction); ``None`` = no transaction.

    Attributes:
        fraction, message: the latest progress report (for a progress bar).
        result: what ``apply`` returned, once done.
        error: the exception that stopped the task (``Cancelled`` after :meth:`cancel`).
    """

    def __init__(self, work: Any, apply: Any, scene: Any = None, name: str = "ClinicalAI task") -> None:
        import threading

        self.token = CancelToken()
        self.fraction, self.message = 0.0, "starting"
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._work_fn, self._apply_fn, self._scene = work, apply, scene
        self._value: Any = None
        self._applied = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _work(self) -> None:
        try:
            self._value = self._work_fn(self._progress, self.token)
        except BaseException as exc:  # handed to the GUI thread by poll()
            self.error = exc

    def _apply(self) -> Any:
        check_cancel(self.token)
        if self._scene is None:
            return self._apply_fn(self._value)
        with scene_transaction(self._scene):
            return self._apply_fn(self._value)

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def running(self) -> bool:
        return not self._applied and self.error is None

    def poll(self, wait: float = 0.0) -> bool:
        """``True`` once the task is over (result applied, or :attr:`error` set)."""
        if wait > 0:
            self._thread.join(wait)
        if self._thread.is_alive():
            return False
        if self.error is None and not self._applied:
            try:
                self.result = self._apply()
            except BaseException as exc:
                self.error = exc
            self._applied = True
        return True


class BackgroundRun(BackgroundTask):
    """A module run as a :class:`BackgroundTask`: ``prepare`` in the constructor (main
    thread), ``compute`` (the engine) in the worker thread, ``finish`` at :meth:`poll`.

    Attributes:
        params: the parameters with the output node IDs, once done (also :attr:`result`).
    """

    def __init__(self, logic: "WorkflowLogic[Any]", params: Any) -> None:
        self.logic = logic
        self._inputs = logic.prepare(params)
        self._request = params
        super().__init__(
            lambda progress, cancel: logic.compute(self._inputs, progress, cancel),
            lambda result: logic.finish(self._request, self._inputs, result, self.token),
            scene=None,  # finish is transactional itself
            name=f"ClinicalAI {logic.module_name}",
        )

    @property
    def params(self) -> Any:
        return self.result


def _is_untrusted_model(error: Optional[BaseException]) -> bool:
    from ..models import UntrustedModelError

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
    import traceback

    from ..errors import ClinicalAIError

    message = str(error) if isinstance(error, ClinicalAIError) else f"Unexpected error: {type(error).__name__}: {error}"
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return message, details


class PanelRunner:
    """The Apply / Cancel / progress cycle of a module panel, one for the three Widgets.

    It follows one :class:`BackgroundTask` at a time: a timer the Widget passes in (a
    ``qt.QTimer``; the engine never imports Qt) calls :meth:`poll`, which moves the progress
    bar and the status line, and once the task is over re-enables the panel and reports the
    outcome: "Cancelled; nothing was changed.", an error dialog (the engine's message, the
    traceback as details, also logged) and "Failed; nothing was changed.", or ``on_done(task)``.

    Args:
        module_name: the module, in the log line of a failure.
        ui: the panel's widgets; it must have ``applyButton``, ``cancelButton``,
            ``progressBar`` (0-100) and ``statusLabel``.
        busy_widgets: names of more ``ui`` widgets disabled while a task runs.
        on_finished: called after every task, whatever its outcome (e.g. re-check Apply).
        show_error: ``show_error(message, details)``; default ``slicer.util.errorDisplay``.
        confirm: ``confirm(question) -> bool``, asked before trusting a TorchScript model file
            (see :meth:`start`'s ``rerun``); default ``slicer.util.confirmYesNoDisplay``.

    Desktop only: the browser app never asks to trust a file (it loads only the server's
    models, see ``clinicalai.web.security.OfferedChoices``) and does not use this class.
    """

    def __init__(self, module_name: str, ui: Any, busy_widgets: Tuple[str, ...] = (), on_finished: Any = None,
                 show_error: Any = None, confirm: Any = None) -> None:
        self.module_name = module_name
        self.ui = ui
        self.busy_widgets = ("applyButton", *busy_widgets)
        self.on_finished = on_finished
        self.show_error = show_error
        self.confirm = confirm
        self.task: Optional[BackgroundTask] = None
        self._on_done: Any = None
        self._timer: Any = None
        self._rerun: Any = None
        self._trusted_in_this_run: set = set()

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self, task: BackgroundTask, on_done: Any, timer: Any, interval_ms: int = 100, rerun: Any = None) -> None:
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
        if error is None:
            self.ui.statusLabel.text = "Done."
            self._on_done(task)
            return True
        from ..errors import Cancelled

        if isinstance(error, Cancelled):
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
            return True
        message, details = error_report(error)
        log.error("%s failed:\n%s", self.module_name, details)
        if self.show_error is not None:
            self.show_error(message, details)
        else:
            import slicer

            slicer.util.errorDisplay(message, detailedText=details)
        self.ui.statusLabel.text = "Failed; nothing was changed."
        return True

    def _trust_and_rerun(self, error: BaseException) -> Optional[BaseException]:
        """Ask whether to trust the TorchScript file that stopped the run; on yes record it
        and start the run again. ``None`` when the new run is going on, else the error to
        report: the user said no, or recording / restarting failed."""
        from ..models import record_trust

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

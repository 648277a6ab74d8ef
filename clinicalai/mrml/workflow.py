"""The base of the three module logics: parameters in the scene, loaded models, and a run in
three typed steps so a GUI can keep responsive and a failure changes nothing.

A run is ``prepare`` (main thread: read the input nodes into a frozen inputs dataclass of
:class:`~clinicalai.volume.Volume` objects), ``compute`` (any thread: the engine, no MRML;
reports progress, stops on cancel; returns the engine's own result, or a small typed wrapper
of it) and ``apply`` (main thread: result nodes, inside :func:`scene_transaction`). ``run``
does all three; the desktop widget and the browser app run ``compute`` in a worker thread
and ``apply`` back on the main thread (:mod:`clinicalai.mrml.runner`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Generic, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar

from ..errors import FitNotConfirmed
from ..progress import CancelToken, ProgressCallback, check_cancel
from ..volume import Volume
from .context import MRMLContext
from .model_choices import ModelCache, model_card
from .parameters import get_parameter_node, read_parameters, write_parameters
from .scene import node_by_id, scene_transaction
from .volumes import node_to_volume, shown_time_point

P = TypeVar("P")  # the panel's parameters dataclass (saved in the scene)
I = TypeVar("I")  # noqa: E741 - the frozen inputs dataclass prepare() reads from the nodes
R = TypeVar("R")  # what compute() returns: the engine's result (or a typed wrapper of it)


class WorkflowLogic(Generic[P, I, R]):
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
    def prepare(self, params: P) -> I:  # pragma: no cover - overridden
        raise NotImplementedError

    def compute(self, inputs: I, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> R:  # pragma: no cover
        raise NotImplementedError

    def apply(self, params: P, inputs: I, result: R) -> P:  # pragma: no cover
        raise NotImplementedError

    def run(self, params: Optional[P] = None, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> P:
        """Prepare, compute and apply; returns the parameters with the output node IDs (also
        stored in the parameter node). Raises the engine's errors (``Cancelled`` included)
        with the scene unchanged."""
        params = params if params is not None else self.get_parameters()
        inputs = self.prepare(params)
        result = self.compute(inputs, progress, cancel)
        return self.finish(params, inputs, result, cancel)

    def finish(self, params: P, inputs: I, result: R, cancel: Optional[CancelToken] = None) -> P:
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

    def require_fit(self, params: P, volume: Volume, models: Iterable[str], what: str = "the image",
                    node: Any = None) -> Tuple[str, ...]:
        """The fit problems of ``volume`` with each model (path or name; "" skipped), as
        messages for the run's warnings, once the user has accepted them. ``node``: the volume's
        node; one Slicer read from a 4D NIfTI is a problem too (its reader kept the first time
        point without a word, :func:`clinicalai.mrml.volumes.shown_time_point`), and a sequence's
        proxy adds a note (the result is of the frame browsed to).

        Called last in ``prepare`` (reads only, so a refusal changes nothing). Why a refusal and
        not only a warning: a network answers whatever it is given (the cardiac segmenter draws
        RV / MYO / LV over a brain), so a misfit must be seen before the run, not after.

        Raises:
            FitNotConfirmed: there are problems and ``params.confirmed_fit`` is not True.
        """
        from ..models.fit import FitProblem, check_fit  # engine side (numpy only); the cards need pydantic

        problems, notes = [], []
        point = shown_time_point(node) if node is not None else None
        if point is not None and point.source is not None:  # the first frame Slicer's reader kept
            problems.append(FitProblem("frames", f"{node.GetName()} is the first of the {point.frames} time points of "
                                                 f"{Path(point.source).name} (Slicer's reader keeps the first); to use "
                                                 "another, open it with --frame K or the browser's time-point chooser"))
        elif point is not None and point.browsed:
            # the user chose the frame by browsing: nothing to confirm, but the result is of that
            # frame and does not follow the browser to another one
            notes.append(f"made on frame {point.shown + 1} of the {point.frames} of {point.of}; it stays as it is when "
                         "another frame is browsed to")
        for path in models:
            for problem in check_fit(model_card(path), volume, what) if path else []:
                if problem.message not in [p.message for p in problems]:
                    problems.append(problem)
        if problems and getattr(params, "confirmed_fit", False) is not True:
            raise FitNotConfirmed(problems)
        return tuple(p.message for p in problems) + tuple(notes)


def with_warnings(warnings: Sequence[str], extra: Iterable[str]) -> List[str]:
    """``warnings`` then each of ``extra`` not already there (the engine reports the same fit
    problems the user accepted before the run: shown once)."""
    out = [str(w) for w in warnings]
    for w in extra:
        if str(w) not in out:
            out.append(str(w))
    return out

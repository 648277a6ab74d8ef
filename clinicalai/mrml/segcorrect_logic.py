"""SegCorrect on MRML nodes: segmentation + NVAE correction into raw / corrected / final
segmentation nodes and a per-slice table; accept or reject the correction per slice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, report, scaled
from ..segcorrect import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER, STRATEGIES  # cheap: names only
from ..volume import Volume
from .model_choices import chosen_model_path, model_card
from .parameters import gui_flag_field, node_field, transient_field
from .scene import RASPoint, jump_to_slice, labels_from_node, node_by_id
from .segmentations import add_segmentation_node, fill_segmentation_node, segmentation_to_labels, segments_from_card
from .tables import add_table_node, fill_table_node, table_rows
from .volumes import volume_grid_of_node
from .workflow import WorkflowLogic, with_warnings

if TYPE_CHECKING:  # pragma: no cover - typing only: the pipeline needs scipy / torch
    from ..models import ModelCard
    from ..segcorrect.pipeline import CorrectionResult, SegCorrectResult, SliceDecision

#: the segmentations a run leaves for review, by the name the GUIs show: the segmenter's (or
#: the user's) mask, the corrector's proposal, and the result of the per-slice decisions
REVIEW_LAYERS = ("final", "raw", "corrected")


#: what the panels (desktop and browser) call each correction strategy, in the engine's order
STRATEGY_TITLES = {
    "gate": "gate: keep raw unless a small repair fixes it (default)",
    "evidence": "evidence: best valid candidate by the segmenter's probabilities (next best per slice)",
}


def _decision_words() -> "tuple[str, str]":
    """The engine's per-slice decisions ``(CORRECTED, KEPT_RAW)``. Imported when used:
    ``clinicalai.segcorrect.pipeline`` needs scipy, and the Slicer modules load this file
    before the engine's packages are installed."""
    from ..segcorrect.pipeline import CORRECTED, KEPT_RAW

    return CORRECTED, KEPT_RAW


@dataclass
class SegCorrectParameters:
    """SegCorrect panel state (saved with the scene)."""

    # the three node references (and ``correct``) are those of the desktop panel's
    # parameterNodeWrapper (SegCorrect/SegCorrect.py): one value each in the node, shared by
    # GUI and logic
    input_volume: Optional[str] = node_field(role="inputVolume")
    #: a mask made by any tool: when set, it is corrected instead of running the segmenter
    input_segmentation: Optional[str] = node_field(role="inputSegmentation")
    segmenter_model: str = ""  # "" = bundled cardiac-unet
    corrector_model: str = ""  # "" = bundled cardiac-nvae
    device: str = "auto"
    #: the correction strategy (``clinicalai.segcorrect.STRATEGIES``): "evidence" ranks valid
    #: candidates per invalid slice, which :meth:`SegCorrectLogic.next_best` steps through
    strategy: str = "gate"
    #: correct the mask with the corrector; the desktop panel's "correct" check box edits it
    correct: bool = gui_flag_field(True)
    #: final segmentation; a node the user picked, or made by the run
    output_segmentation: Optional[str] = node_field(role="outputSegmentation")
    raw_segmentation: Optional[str] = node_field()
    corrected_segmentation: Optional[str] = node_field()
    slice_table: Optional[str] = node_field()
    #: per slice (third voxel axis): "corrected" or "kept raw"
    decisions: List[str] = field(default_factory=list)
    #: the last run's warnings about its input (reader, model fit), one sentence each
    warnings: List[str] = field(default_factory=list)
    #: the user said "run anyway" to the input's fit problems, for this one run (never stored)
    confirmed_fit: bool = transient_field(False)


@dataclass(frozen=True)
class SegCorrectInputs:
    """What :meth:`SegCorrectLogic.prepare` read from the nodes (main thread) for ``compute``.

    Attributes:
        image_node: the input volume node (results are named after it and reference it).
        image: the input volume ``(Z, Y, X)``.
        mask: a mask made by any tool, label values as in the corrector's card, on the
            image grid; ``None``: the segmenter makes one.
        segmenter, corrector: model paths; ``""`` = not used.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        fit_warnings: the fit problems the user accepted before the run (messages).
    """

    image_node: Any
    image: Volume
    mask: Optional[Volume] = None
    segmenter: str = ""
    corrector: str = ""
    device: str = "auto"
    strategy: str = "gate"
    fit_warnings: Tuple[str, ...] = ()


@dataclass
class SegCorrectOutcome:
    """What ``compute`` hands to ``apply``: the engine's masks and per-slice decisions (from a
    ``SegCorrectResult`` or, for a user's mask, a ``CorrectionResult``) and the segments.

    Attributes:
        raw: the segmenter's (or the user's) mask on the image grid.
        corrected: the corrector's proposal; ``None`` without correction.
        final: the gated result.
        slices: the engine's :class:`~clinicalai.segcorrect.pipeline.SliceDecision` per slice.
        segments: ``[{"name", "value", "color"}]`` of the labels.
        warnings: sentences about the input (reader, model fit).
    """

    raw: Volume
    corrected: Optional[Volume]
    final: Volume
    slices: List["SliceDecision"]
    segments: List[Dict[str, Any]]
    warnings: List[str] = field(default_factory=list)

    @classmethod
    def of_correction(cls, result: "CorrectionResult", segments: List[Dict[str, Any]]) -> "SegCorrectOutcome":
        """A user's mask corrected (no segmenter, no input warnings)."""
        return cls(result.raw, result.corrected, result.final, list(result.slices), segments)

    @classmethod
    def of_segmentation(cls, result: "SegCorrectResult", segments: List[Dict[str, Any]]) -> "SegCorrectOutcome":
        """The segmenter's mask and its correction (``None`` when switched off)."""
        correction = result.correction
        corrected = correction.corrected if correction is not None else None
        slices = list(correction.slices) if correction is not None else []
        return cls(result.raw, corrected, result.final, slices, segments, list(result.warnings))


class SegCorrectLogic(WorkflowLogic[SegCorrectParameters, SegCorrectInputs, SegCorrectOutcome]):
    """SegCorrect's MRML logic (desktop module and browser app)."""

    module_name = "SegCorrect"
    parameters_class = SegCorrectParameters

    def prepare(self, params: SegCorrectParameters) -> SegCorrectInputs:
        image_node, image = self.input_volume(params.input_volume)
        image.require_volumetric().require_finite()
        if params.input_segmentation and params.output_segmentation == params.input_segmentation:
            raise InputError("the output segmentation must not be the input segmentation (it would be overwritten)")
        use_corrector = params.correct or params.input_segmentation
        corrector = str(chosen_model_path(params.corrector_model, DEFAULT_CORRECTOR)) if use_corrector else ""
        mask = self._input_mask(params.input_segmentation, image, corrector)
        if params.output_segmentation:
            out = node_by_id(self.scene, params.output_segmentation, "output segmentation")
            if not out.IsA("vtkMRMLSegmentationNode"):
                raise InputError(f"the output {out.GetName()} is not a segmentation")
        segmenter = "" if mask is not None else str(chosen_model_path(params.segmenter_model, DEFAULT_SEGMENTER))
        if params.strategy not in STRATEGIES:
            raise InputError(f"correction strategy must be one of {', '.join(STRATEGIES)}, got {params.strategy!r}")
        # the segmenter reads the image; a user's mask goes to the corrector, which reads masks
        fit = self.require_fit(params, image, [segmenter], node=image_node)
        return SegCorrectInputs(image_node, image, mask, segmenter, corrector, params.device, params.strategy, fit)

    def _input_mask(self, node_id: Optional[str], image: Volume, corrector: str) -> Optional[Volume]:
        """The user's mask as labels on the image grid; ``None`` without one. A segmentation's
        segments named like the corrector's labels (RV, MYO, LV) get their values; a label
        map's values must be the corrector's, or nothing runs (a mask of another tool's
        numbering would be corrected as the wrong structures)."""
        if not node_id:
            return None
        card = model_card(corrector)
        names = {lab.name: lab.value for lab in card.labels}
        labels = labels_from_node(self.scene, node_id, image, "input segmentation", label_names=names)
        if node_by_id(self.scene, node_id, "input segmentation").IsA("vtkMRMLSegmentationNode"):
            return labels
        values = {int(v) for v in np.unique(labels.array)} - {0}
        unknown = sorted(values - set(names.values()))
        if unknown or np.any(np.asarray(labels.array) != np.round(labels.array)):
            expected = ", ".join(f"{v} = {n}" for n, v in sorted(names.items(), key=lambda kv: kv[1]))
            raise InputError(f"the label map holds values {unknown or 'that are not whole numbers'}, not "
                             f"the labels of {card.name} ({expected}): give a mask in that numbering")
        return labels.with_array(np.asarray(labels.array).astype(np.int32), modality="SEG", units="label",
                                 metadata=dict(labels.metadata, segments=segments_from_card(card)))

    def compute(
        self, inputs: SegCorrectInputs, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> SegCorrectOutcome:
        # the first run imports PyTorch / MONAI and reads the weights (seconds): each step is
        # reported, so the bar moves and says what it waits for instead of sitting at 0 %
        report(progress, 0.01, "loading the engine (PyTorch, MONAI)")
        from ..segcorrect import pipeline  # heavy (scipy / torch): loaded on the first run

        load_span = (0.02, 0.035) if inputs.mask is None else (0.02, 0.05)
        corrector = self.models.get(inputs.corrector, inputs.device, scaled(progress, *load_span)) if inputs.corrector else None
        if inputs.mask is not None:
            correction = pipeline.correct_mask(inputs.mask, corrector, image=inputs.image, progress=scaled(progress, 0.05, 1.0),
                                               cancel=cancel, strategy=inputs.strategy)
            # a mask-correction card names the labels too
            segments = _segments(corrector.card, correction.raw) or list(inputs.mask.metadata.get("segments") or [])
            return SegCorrectOutcome.of_correction(correction, segments)
        segmenter = self.models.get(inputs.segmenter, inputs.device, scaled(progress, 0.035, 0.05))
        result = pipeline.run_segcorrect(inputs.image, segmenter, corrector, progress=scaled(progress, 0.05, 1.0), cancel=cancel,
                                         strategy=inputs.strategy, fit_warnings=inputs.fit_warnings)  # checked in prepare
        return SegCorrectOutcome.of_segmentation(result, _segments(segmenter.card, result.raw))

    def apply(self, params: SegCorrectParameters, inputs: SegCorrectInputs, result: SegCorrectOutcome) -> SegCorrectParameters:
        corrected, kept_raw = _decision_words()
        image_node = inputs.image_node
        name = image_node.GetName()
        segs = result.segments or None
        raw = add_segmentation_node(self.scene, result.raw, f"{name} raw", segs, reference_node=image_node)
        raw.GetDisplayNode().SetVisibility(False)
        params.raw_segmentation = raw.GetID()
        params.corrected_segmentation = None
        if result.corrected is not None:
            node = add_segmentation_node(self.scene, result.corrected, f"{name} corrected", segs, reference_node=image_node)
            node.GetDisplayNode().SetVisibility(False)
            params.corrected_segmentation = node.GetID()
        rows = [_table_row(s) for s in result.slices]
        decisions = [kept_raw] * result.raw.shape[0]
        for s in result.slices:
            decisions[s.index] = corrected if s.decision == corrected else kept_raw
        params.decisions = decisions
        # the valid candidates of each slice, best first, for next_best (kept with the logic:
        # arrays, not panel state); shown[z] is the rank the corrected node holds now
        self._candidates = {s.index: [c for c in s.ranking if c.validity.valid] for s in result.slices}
        self._shown: Dict[int, int] = {}
        params.warnings = with_warnings(result.warnings, inputs.fit_warnings)
        params.slice_table = add_table_node(self.scene, rows, f"{name} slices").GetID() if rows else None
        if params.output_segmentation:  # a node the user picked: filled as the very last step
            final = node_by_id(self.scene, params.output_segmentation, "output segmentation")
            fill_segmentation_node(final, result.final, segs)
        else:
            final = add_segmentation_node(self.scene, result.final, f"{name} segmentation", segs, reference_node=image_node)
            params.output_segmentation = final.GetID()
        return params

    # ---------------------------------------------------------------- review
    def set_correction(self, accept: bool, slices: Optional[Sequence[int]] = None, params: Optional[SegCorrectParameters] = None) -> SegCorrectParameters:
        """Accept (``True``) or reject the correction on ``slices`` (all when ``None``): the
        final segmentation takes those slices from the corrected (or raw) segmentation."""
        params = params or self.get_parameters()
        if not params.raw_segmentation or not params.output_segmentation:
            raise InputError("run SegCorrect first")
        if accept and not params.corrected_segmentation:
            raise InputError("this run made no corrected segmentation")
        grid = volume_grid_of_node(node_by_id(self.scene, params.input_volume, "input volume"))
        params.decisions = _decide(list(params.decisions), grid.shape[0], accept, slices)
        self._fill_final(params, grid)
        self._update_slice_table(params)
        self.set_parameters(params)
        return params

    def next_best(self, slice_index: int, params: Optional[SegCorrectParameters] = None) -> Dict[str, Any]:
        """Put the next-best valid candidate of slice ``slice_index`` (``strategy="evidence"``;
        after the last, the best again) into the corrected segmentation and accept it there.

        Returns ``{"slice", "rank" (0 = best), "source", "score"}`` of the candidate shown.

        Raises:
            InputError: no run yet, the slice outside the volume, or it has fewer than two
                valid candidates (a valid raw slice has none); nothing is changed then.
        """
        params = params or self.get_parameters()
        if not params.raw_segmentation or not params.output_segmentation or not params.corrected_segmentation:
            raise InputError("run SegCorrect with correction first")
        grid = volume_grid_of_node(node_by_id(self.scene, params.input_volume, "input volume"))
        z = int(slice_index)
        if not 0 <= z < grid.shape[0]:
            raise InputError(f"slice {z} is outside the volume (0..{grid.shape[0] - 1})")
        ranking = getattr(self, "_candidates", {}).get(z, [])
        if len(ranking) < 2:
            raise InputError(f"slice {z} has {len(ranking)} valid candidate(s), no next best "
                             "(only invalid slices corrected with the evidence strategy have candidates)")
        rank = (self._shown.get(z, 0) + 1) % len(ranking)
        node = node_by_id(self.scene, params.corrected_segmentation, "corrected segmentation")
        corrected = segmentation_to_labels(node, grid)
        out = corrected.array.copy()
        out[z] = ranking[rank].labels
        fill_segmentation_node(node, corrected.with_array(out), corrected.metadata["segments"])
        self._shown[z] = rank
        params.decisions = _decide(list(params.decisions), grid.shape[0], True, [z])
        self._fill_final(params, grid)
        self._update_slice_table(params)
        self.set_parameters(params)
        return {"slice": z, "rank": rank, "source": ranking[rank].source, "score": float(ranking[rank].score)}

    def _fill_final(self, params: SegCorrectParameters, grid: Any) -> None:
        """The final segmentation from the raw and corrected nodes by ``params.decisions``: the
        rule of ``CorrectionResult.with_choices``, applied to the nodes (they are the state
        that is saved with the scene, and the user may have edited them)."""
        corrected_word, _ = _decision_words()
        raw = segmentation_to_labels(node_by_id(self.scene, params.raw_segmentation, "raw segmentation"), grid)
        final = raw.array.copy()
        if params.corrected_segmentation:
            corrected = segmentation_to_labels(node_by_id(self.scene, params.corrected_segmentation, "corrected segmentation"), grid)
            use = np.array([d == corrected_word for d in params.decisions])
            final[use] = corrected.array[use]
        output = node_by_id(self.scene, params.output_segmentation, "output segmentation")
        fill_segmentation_node(output, raw.with_array(final), raw.metadata["segments"])

    def _update_slice_table(self, params: SegCorrectParameters) -> None:
        """The decision column of the slice table (when it is still there) from ``params.decisions``."""
        if not params.slice_table:
            return
        table = node_by_id(self.scene, params.slice_table, "slice table", required=False)
        if table is None:
            return
        rows = table_rows(table)
        for row in rows:
            row["decision"] = params.decisions[int(row["slice"])]
        fill_table_node(table, rows)

    def review_nodes(self, params: Optional[SegCorrectParameters] = None) -> Dict[str, Any]:
        """``{layer: segmentation node}`` of the run's :data:`REVIEW_LAYERS` still in the
        scene (no ``"corrected"`` for a run without correction)."""
        params = params or self.get_parameters()
        ids = {"final": params.output_segmentation, "raw": params.raw_segmentation,
               "corrected": params.corrected_segmentation}
        nodes = {layer: node_by_id(self.scene, ids[layer], f"{layer} segmentation", required=False) for layer in REVIEW_LAYERS}
        return {layer: node for layer, node in nodes.items() if node is not None}

    def show_layer(self, layer: str, params: Optional[SegCorrectParameters] = None) -> Any:
        """Show the run's ``layer`` segmentation (one of :data:`REVIEW_LAYERS`) in the views and
        hide the other two, so the user sees what the segmenter made, what the corrector
        proposed and what is kept, one at a time over the same image; the node shown.

        Raises:
            InputError: an unknown layer, no run, or a layer this run did not make.
        """
        if layer not in REVIEW_LAYERS:
            raise InputError(f"no segmentation {str(layer)[:20]!r} to show (one of {', '.join(REVIEW_LAYERS)})")
        nodes = self.review_nodes(params)
        if layer not in nodes:
            raise InputError("run SegCorrect first" if not nodes else f"this run made no {layer} segmentation")
        for name, node in nodes.items():
            display = node.GetDisplayNode()
            if display is None:
                node.CreateDefaultDisplayNodes()
                display = node.GetDisplayNode()
            display.SetVisibility(name == layer)
        return nodes[layer]

    def jump_to_row(self, row: int, params: Optional[SegCorrectParameters] = None) -> RASPoint:
        """Centre the slice views on the slice of table row ``row``; returns the RAS point."""
        params = params or self.get_parameters()
        table = node_by_id(self.scene, params.slice_table, "slice table")
        k = int(table_rows(table)[row]["slice"])
        return jump_to_slice(self.scene, node_by_id(self.scene, params.input_volume, "input volume"), k)


def _table_row(decision: "SliceDecision") -> Dict[str, Any]:
    """The engine's table row of a slice, its slice index a plain int (the table's key)."""
    row = decision.table_row()
    row["slice"] = int(row["slice"])
    return row


def _segments(card: "ModelCard", raw: Volume) -> List[Dict[str, Any]]:
    """The segments of a result: the card's labels, else those the raw mask carries."""
    return segments_from_card(card) or list(raw.metadata.get("segments") or [])


def _decide(decisions: List[str], n: int, accept: bool, slices: Optional[Sequence[int]]) -> List[str]:
    """``decisions`` (one per slice, ``n`` slices; empty = all kept raw) with ``slices`` (all
    when ``None``) set to corrected (``accept``) or kept raw."""
    corrected, kept_raw = _decision_words()
    out = decisions or [kept_raw] * n
    for k in range(n) if slices is None else [int(k) for k in slices]:
        if not 0 <= k < n:
            raise InputError(f"slice {k} is outside the volume (0..{n - 1})")
        out[k] = corrected if accept else kept_raw
    return out

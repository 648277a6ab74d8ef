"""SegCorrect on MRML nodes: segmentation + NVAE correction into raw / corrected / final
segmentation nodes and a per-slice table; accept or reject the correction per slice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, report, scaled
from ..volume import Volume
from .logic import WorkflowLogic, jump_to_slice, node_by_id, read_model_card, resolve_model_path
from .parameters import node_field
from .segmentations import add_segmentation_node, fill_segmentation_node, segmentation_to_labels, segments_from_card
from ..segcorrect import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER  # cheap: names only
from .tables import add_table_node, fill_table_node, table_rows

#: per-slice decisions, in the words of clinicalai.segcorrect.pipeline (CORRECTED, KEPT_RAW);
#: not imported from there so that loading the Slicer module needs no scipy / torch yet
CORRECTED, RAW = "corrected", "kept raw"


@dataclass
class SegCorrectParameters:
    """SegCorrect panel state (saved with the scene)."""

    input_volume: Optional[str] = node_field()
    #: a mask made by any tool: when set, it is corrected instead of running the segmenter
    input_segmentation: Optional[str] = node_field()
    segmenter_model: str = ""  # "" = bundled cardiac-unet
    corrector_model: str = ""  # "" = bundled cardiac-nvae
    device: str = "auto"
    correct: bool = True
    #: final segmentation; a node the user picked, or made by the run
    output_segmentation: Optional[str] = node_field()
    raw_segmentation: Optional[str] = node_field()
    corrected_segmentation: Optional[str] = node_field()
    slice_table: Optional[str] = node_field()
    #: per slice (third voxel axis): "corrected" or "kept raw"
    decisions: List[str] = field(default_factory=list)
    #: the last run's warnings about its input (reader, model fit), one sentence each
    warnings: List[str] = field(default_factory=list)


@dataclass
class SegCorrectOutcome:
    """The engine's result as the logic needs it (whatever the engine's own result class)."""

    raw: Volume
    corrected: Optional[Volume]
    final: Volume
    slices: List[Any]  # the engine's per-slice decisions (objects or dicts with "index")
    segments: List[Dict[str, Any]]
    warnings: List[str] = field(default_factory=list)


def _slice_row(s: Any) -> Dict[str, Any]:
    """One row of the per-slice table: the engine's own ``table_row()`` when it has one."""
    if hasattr(s, "table_row"):
        row = dict(s.table_row())
    else:
        d = dict(s) if isinstance(s, dict) else dict(vars(s))
        row = {"slice": d.pop("index") if "index" in d else d.pop("slice")}
        row.update({k: v for k, v in d.items() if isinstance(v, (bool, int, float, str, np.generic))})
    row["slice"] = int(row["slice"])
    row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    row["decision"] = CORRECTED if str(row.get("decision", RAW)).lower().startswith(CORRECTED) else RAW
    return row


class SegCorrectLogic(WorkflowLogic[SegCorrectParameters]):
    """SegCorrect's MRML logic (desktop module and browser app)."""

    module_name = "SegCorrect"
    parameters_class = SegCorrectParameters

    def prepare(self, params: SegCorrectParameters) -> Dict[str, Any]:
        image_node, image = self.input_volume(params.input_volume)
        image.require_volumetric().require_finite()
        mask = None
        if params.input_segmentation and params.output_segmentation == params.input_segmentation:
            raise InputError("the output segmentation must not be the input segmentation (it would be overwritten)")
        corrector = str(resolve_model_path(params.corrector_model, DEFAULT_CORRECTOR)) if params.correct or params.input_segmentation else ""
        if params.input_segmentation:
            mask_node = node_by_id(self.scene, params.input_segmentation, "input segmentation")
            # segments named like the corrector's labels (RV, MYO, LV) get their values
            names = {lab.name: lab.value for lab in read_model_card(corrector).labels}
            mask = segmentation_to_labels(mask_node, image, label_names=names)
        if params.output_segmentation:
            out = node_by_id(self.scene, params.output_segmentation, "output segmentation")
            if not out.IsA("vtkMRMLSegmentationNode"):
                raise InputError(f"the output {out.GetName()} is not a segmentation")
        return {
            "image_node": image_node,
            "image": image,
            "mask": mask,
            "segmenter": "" if mask is not None else str(resolve_model_path(params.segmenter_model, DEFAULT_SEGMENTER)),
            "corrector": corrector,
            "device": params.device,
        }

    def compute(
        self, inputs: Dict[str, Any], progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> SegCorrectOutcome:
        from ..segcorrect import pipeline

        report(progress, 0.0, "loading models")
        corrector = self.models.get(inputs["corrector"], inputs["device"]) if inputs["corrector"] else None
        if inputs["mask"] is not None:
            result = pipeline.correct_mask(inputs["mask"], corrector, image=inputs["image"], progress=scaled(progress, 0.05, 1.0), cancel=cancel)
            segments = list(inputs["mask"].metadata.get("segments") or [])
            card = corrector.card  # a mask-correction card names the labels too
        else:
            segmenter = self.models.get(inputs["segmenter"], inputs["device"])
            result = pipeline.run_segcorrect(inputs["image"], segmenter, corrector, progress=scaled(progress, 0.05, 1.0), cancel=cancel)
            card = segmenter.card
            segments = []
        return self._outcome(result, card, segments)

    @staticmethod
    def _outcome(result: Any, card: Any, segments: List[Dict[str, Any]]) -> SegCorrectOutcome:
        """From a ``SegCorrectResult`` (segmenter + optional correction) or a ``CorrectionResult``."""
        correction = result.correction if hasattr(result, "segmentation") else result
        raw, final = result.raw, result.final
        corrected = correction.corrected if correction is not None else None
        slices = list(correction.slices) if correction is not None else []
        segments = segments_from_card(card) or list(raw.metadata.get("segments") or []) or segments
        warnings = list(result.warnings) if hasattr(result, "segmentation") else []  # a correction alone: none
        return SegCorrectOutcome(raw, corrected, final, slices, segments, warnings)

    def apply(self, params: SegCorrectParameters, inputs: Dict[str, Any], result: SegCorrectOutcome) -> SegCorrectParameters:
        image_node = inputs["image_node"]
        name = image_node.GetName()
        segs = result.segments or None
        raw = add_segmentation_node(self.scene, result.raw, f"{name} raw", segs, reference_node=image_node)
        raw.GetDisplayNode().SetVisibility(False)
        params.raw_segmentation = raw.GetID()
        params.corrected_segmentation = None
        if result.corrected is not None:
            corrected = add_segmentation_node(self.scene, result.corrected, f"{name} corrected", segs, reference_node=image_node)
            corrected.GetDisplayNode().SetVisibility(False)
            params.corrected_segmentation = corrected.GetID()
        rows = [_slice_row(s) for s in result.slices]
        decisions = [RAW] * result.raw.shape[0]
        for row in rows:
            decisions[row["slice"]] = row["decision"]
        params.decisions = decisions
        params.warnings = list(result.warnings)
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
        image_node = node_by_id(self.scene, params.input_volume, "input volume")
        from .volumes import volume_grid_of_node

        grid = volume_grid_of_node(image_node)
        n = grid.shape[0]
        chosen = range(n) if slices is None else [int(k) for k in slices]
        decisions = list(params.decisions) or [RAW] * n
        for k in chosen:
            if not 0 <= k < n:
                raise InputError(f"slice {k} is outside the volume (0..{n - 1})")
            decisions[k] = CORRECTED if accept else RAW
        raw_node = node_by_id(self.scene, params.raw_segmentation, "raw segmentation")
        raw = segmentation_to_labels(raw_node, grid)
        # the rule of CorrectionResult.with_choices, applied to the nodes (they are the state
        # that is saved with the scene, and the user may have edited them)
        final = raw.array.copy()
        if params.corrected_segmentation:
            corrected = segmentation_to_labels(node_by_id(self.scene, params.corrected_segmentation, "corrected segmentation"), grid)
            use = np.array([d == CORRECTED for d in decisions])
            final[use] = corrected.array[use]
        segs = raw.metadata["segments"]
        fill_segmentation_node(node_by_id(self.scene, params.output_segmentation, "output segmentation"), raw.with_array(final), segs)
        params.decisions = decisions
        if params.slice_table:
            table = node_by_id(self.scene, params.slice_table, "slice table", required=False)
            if table is not None:
                rows = table_rows(table)
                for row in rows:
                    row["decision"] = decisions[int(row["slice"])]
                fill_table_node(table, rows)
        self.set_parameters(params)
        return params

    def jump_to_row(self, row: int, params: Optional[SegCorrectParameters] = None):
        """Centre the slice views on the slice of table row ``row``; returns the RAS point."""
        params = params or self.get_parameters()
        table = node_by_id(self.scene, params.slice_table, "slice table")
        k = int(table_rows(table)[row]["slice"])
        return jump_to_slice(self.scene, node_by_id(self.scene, params.input_volume, "input volume"), k)

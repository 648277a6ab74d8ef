"""AttributionViewer on MRML nodes: one heat-map node per attribution method (and an anomaly
map from a generative model), side by side over the image; threshold -> segmentation;
metrics against a reference lesion; correlation between methods; the randomised-model check."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ..attribution.metrics import SCORE_KEYS
from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from ..volume import Volume
from .display import MAP_KIND_ATTRIBUTE, add_heatmap_node, slice_composite_nodes
from .logic import WorkflowLogic, mask_from_node, node_by_id, resolve_model_path
from .parameters import node_field, nodes_field
from .segmentations import add_segmentation_node
from .tables import add_table_node
from .volumes import node_to_volume

#: attribute on a map node: the method (or "anomaly") that made it
METHOD_ATTRIBUTE = "ClinicalAI.Method"
METRIC_KEYS = (*SCORE_KEYS, "threshold")


@dataclass
class AttributionViewerParameters:
    """AttributionViewer panel state (saved with the scene)."""

    input_volume: Optional[str] = node_field()
    model: str = ""  # classifier file; "" = none chosen
    anomaly_model: str = ""  # optional generative model for an anomaly map
    target: int = -1  # class explained; -1 = the predicted class
    methods: List[str] = field(default_factory=lambda: ["gradient", "integrated-gradients", "gradcam"])
    lesion: Optional[str] = node_field()  # reference lesion (segmentation / labelmap)
    #: threshold of a map into a segmentation, as a fraction of the map's largest |value|
    threshold: float = 0.5
    device: str = "auto"
    maps: List[str] = nodes_field()
    metrics_table: Optional[str] = node_field()
    correlation_table: Optional[str] = node_field()
    randomization_table: Optional[str] = node_field()
    threshold_segmentation: Optional[str] = node_field()
    #: the last run: explained class, the model's prediction, the anomaly score
    summary: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AttributionOutcome:
    maps: Dict[str, Volume]  # method -> map on the input grid
    signed: Dict[str, bool]
    metrics: List[Dict[str, Any]]
    correlations: List[Dict[str, Any]]
    summary: Dict[str, Any] = field(default_factory=dict)


def _map_volume(result: Any) -> Volume:
    return result if isinstance(result, Volume) else (getattr(result, "volume", None) or getattr(result, "map"))


class AttributionViewerLogic(WorkflowLogic[AttributionViewerParameters]):
    """AttributionViewer's MRML logic (desktop module and browser app)."""

    module_name = "AttributionViewer"
    parameters_class = AttributionViewerParameters

    def prepare(self, params: AttributionViewerParameters) -> Dict[str, Any]:
        node, image = self.input_volume(params.input_volume)
        image.require_volumetric().require_finite()
        if not params.model and not params.anomaly_model:
            raise InputError("choose a classifier model (and/or a generative model for an anomaly map)")
        if params.model and not params.methods:
            raise InputError("choose at least one attribution method")
        return {
            "image_node": node,
            "image": image,
            "lesion": mask_from_node(self.scene, params.lesion, image, "reference lesion"),
            "model": str(resolve_model_path(params.model, "")) if params.model else "",
            "anomaly_model": params.anomaly_model,
            "methods": list(params.methods) if params.model else [],
            "target": None if params.target is None or params.target < 0 else int(params.target),
            "device": params.device,
        }

    def compute(
        self, inputs: Dict[str, Any], progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> AttributionOutcome:
        from ..attribution.metrics import map_correlation, score_map

        maps: Dict[str, Volume] = {}
        signed: Dict[str, bool] = {}
        summary: Dict[str, Any] = {}
        lesion_scores: Optional[Dict[str, Any]] = None
        steps = len(inputs["methods"]) + (1 if inputs["anomaly_model"] else 0)
        if inputs["methods"]:
            from ..attribution import attribute

            report(progress, 0.0, "loading classifier")
            model = self.models.get(inputs["model"], inputs["device"])
            for i, method in enumerate(inputs["methods"]):
                check_cancel(cancel)
                report(progress, i / steps, f"{method}")
                result = attribute(model, inputs["image"], method, target=inputs["target"], progress=scaled(progress, i / steps, (i + 1) / steps), cancel=cancel)
                maps[method] = _map_volume(result)
                signed[method] = bool(getattr(result, "signed", np.nanmin(maps[method].array) < 0))
                if not summary and hasattr(result, "prediction"):
                    summary.update(target=result.target, target_name=result.target_name, prediction=_plain(result.prediction),
                                   warnings=list(result.warnings))
        if inputs["anomaly_model"]:
            from ..generative import anomaly

            check_cancel(cancel)
            report(progress, (steps - 1) / steps, "anomaly map")
            generative = self.models.get(inputs["anomaly_model"], inputs["device"])
            result = anomaly(inputs["image"], generative, progress=scaled(progress, (steps - 1) / steps, 1.0), cancel=cancel,
                             lesion=inputs["lesion"])
            maps["anomaly"] = _map_volume(result)
            # scored by the engine with the card's own map threshold (the generative area's choice)
            lesion_scores = getattr(result, "lesion_scores", None)
            signed["anomaly"] = False
            summary.update(anomaly_score=float(result.score), anomaly_score_name=str(getattr(result, "score_name", "")))
        for name, vol in maps.items():
            if not vol.same_grid(inputs["image"], atol=1e-4):
                raise InputError(f"the {name} map is not on the input grid (engine bug)")
        check_cancel(cancel)
        metrics = []
        if inputs["lesion"] is not None:
            for name, vol in maps.items():
                if name == "anomaly" and lesion_scores:
                    scores = lesion_scores
                else:
                    # as `clinicalai explain --lesion` scores it (the map as it is: positive =
                    # evidence for the target class), so the table and the CLI agree
                    scores = score_map(vol.array, inputs["lesion"].array)
                metrics.append({"map": name, **{k: scores.get(k) for k in METRIC_KEYS}})
        correlations = [
            {"map A": a, "map B": b, "spearman": map_correlation(maps[a].array, maps[b].array, method="spearman")}
            for a, b in itertools.combinations(maps, 2)
        ]
        report(progress, 1.0, "done")
        return AttributionOutcome(maps, signed, metrics, correlations, summary)

    def apply(self, params: AttributionViewerParameters, inputs: Dict[str, Any], result: AttributionOutcome) -> AttributionViewerParameters:
        image_node = inputs["image_node"]
        nodes = []
        for name, vol in result.maps.items():
            node = add_heatmap_node(self.scene, vol, self.output_name(image_node, name), signed=result.signed[name])
            node.SetAttribute(METHOD_ATTRIBUTE, name)
            nodes.append(node)
        params.maps = [n.GetID() for n in nodes]
        params.metrics_table = add_table_node(self.scene, result.metrics, self.output_name(image_node, "map metrics")).GetID() if result.metrics else None
        params.correlation_table = (
            add_table_node(self.scene, result.correlations, self.output_name(image_node, "map correlation")).GetID() if result.correlations else None
        )
        show_side_by_side(self.scene, image_node, nodes)
        params.summary = result.summary
        return params

    # ---------------------------------------------------------------- follow-up actions
    def threshold_to_segmentation(self, map_node_id: str, threshold: Optional[float] = None) -> Any:
        """A new segmentation of the voxels where the map is at least ``threshold`` x its largest
        |value| (|map| for signed maps); scored against the reference lesion when there is one
        (row added to the metrics table). Returns the segmentation node."""
        params = self.get_parameters()
        fraction = params.threshold if threshold is None else float(threshold)
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"the threshold must be a fraction in (0, 1], got {fraction}")
        map_node = node_by_id(self.scene, map_node_id, "map")
        vol = node_to_volume(map_node)
        values = np.abs(vol.array) if map_node.GetAttribute(MAP_KIND_ATTRIBUTE) == "signed" else vol.array
        peak = float(np.nanmax(values))
        if not peak > 0:
            raise InputError(f"{map_node.GetName()} has no positive values to threshold")
        mask = (values >= fraction * peak).astype(np.uint8)
        with_name = f"{map_node.GetName()} >= {fraction:g}"
        from .logic import scene_transaction

        with scene_transaction(self.scene):
            seg = add_segmentation_node(self.scene, vol.with_array(mask), with_name, [{"name": with_name, "value": 1, "color": (1.0, 0.8, 0.0)}])
        params.threshold = fraction
        params.threshold_segmentation = seg.GetID()
        self.set_parameters(params)
        return seg

    def randomization_rows(
        self, inputs: Dict[str, Any], method: Optional[str] = None,
        progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
    ) -> List[Dict[str, Any]]:
        """The randomised-model sanity check (Adebayo et al. 2018) of ``method`` (default: the
        first chosen) as table rows; no MRML (a worker thread may run it). ``inputs`` from
        :meth:`prepare`."""
        from ..attribution import randomization_check

        if not inputs["methods"]:
            raise InputError("the randomised-model check needs a classifier and a method")
        method = method or inputs["methods"][0]
        model = self.models.get(inputs["model"], inputs["device"])
        result = randomization_check(model, inputs["image"], method, target=inputs["target"], progress=progress, cancel=cancel)
        return _rows_of(result, method)

    def add_randomization_table(self, image_node: Any, rows: List[Dict[str, Any]]) -> Any:
        """A table node of :meth:`randomization_rows` (main thread); returns it."""
        from .logic import scene_transaction

        method = rows[0].get("method", "map") if rows else "map"
        with scene_transaction(self.scene):
            table = add_table_node(self.scene, rows, self.output_name(image_node, f"{method} randomisation check"))
        params = self.get_parameters()
        params.randomization_table = table.GetID()
        self.set_parameters(params)
        return table

    def randomization_check(self, method: Optional[str] = None, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Any:
        """Both steps at once on the stored parameters; returns the new table node."""
        inputs = self.prepare(self.get_parameters())
        rows = self.randomization_rows(inputs, method, progress, cancel)
        check_cancel(cancel)
        return self.add_randomization_table(inputs["image_node"], rows)


def _plain(value: Any) -> Any:
    """JSON-able copy (numpy scalars and arrays to Python) for the parameter node."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _rows_of(result: Any, method: str) -> List[Dict[str, Any]]:
    """Table rows of a randomisation-check result (a dict, a dataclass, or a list of rows)."""
    if isinstance(result, list):
        return [dict(r) if isinstance(r, dict) else dict(vars(r)) for r in result]
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    d = result if isinstance(result, dict) else dict(vars(result))
    rows = d.get("rows") or d.get("layers")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return rows
    return [{"method": method, **{k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}}]


def show_side_by_side(scene: Any, image_node: Any, map_nodes: List[Any]) -> int:
    """Each map as foreground over the image in its own slice view, linked so they pan / zoom /
    scroll together: the side-by-side layout's views in a GUI with a layout, else the scene's
    slice views in layout-name order. Returns how many views got a map."""
    from .display import set_side_by_side_layout

    names = set_side_by_side_layout(scene, len(map_nodes))
    composites = sorted(slice_composite_nodes(scene), key=lambda c: c.GetLayoutName() or "")
    if names:
        by_name = {c.GetLayoutName(): c for c in composites}
        composites = [by_name[n] for n in names if n in by_name] or composites
    for composite, node in zip(composites, map_nodes):
        composite.SetBackgroundVolumeID(image_node.GetID())
        composite.SetForegroundVolumeID(node.GetID())
        composite.SetForegroundOpacity(0.6)
        composite.SetLinkedControl(True)
    return min(len(composites), len(map_nodes))

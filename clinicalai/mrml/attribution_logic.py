"""AttributionViewer on MRML nodes: one heat-map node per attribution method (and an anomaly
map from a generative model), side by side over the image; threshold -> segmentation;
metrics against a reference lesion; correlation between methods; the randomised-model check."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from ..attribution.metrics import SCORE_KEYS
from ..errors import InputError
from ..labels import label
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from ..volume import Volume
from .display import MAP_KIND_ATTRIBUTE, add_heatmap_node, set_side_by_side_layout, slice_composite_nodes
from .model_choices import chosen_model_path
from .parameters import jsonable, node_field, nodes_field, transient_field
from .scene import mask_from_node, node_by_id, scene_transaction
from .segmentations import add_segmentation_node
from .tables import add_table_node
from .volumes import node_to_volume
from .workflow import WorkflowLogic, with_warnings

if TYPE_CHECKING:  # pragma: no cover - typing only: the engines need torch
    from ..attribution import AttributionMap, RandomizationCheck
    from ..generative import AnomalyResult

#: attribute on a map node: the method (or "anomaly") that made it
METHOD_ATTRIBUTE = "ClinicalAI.Method"
METRIC_KEYS = (*SCORE_KEYS, "threshold")


@dataclass
class AttributionViewerParameters:
    """AttributionViewer panel state (saved with the scene)."""

    input_volume: Optional[str] = node_field()
    model: str = ""  # classifier file; "" = none chosen
    anomaly_model: str = ""  # optional generative model for an anomaly map
    #: what the anomaly map shows (``both``, ``brighter``, ``darker``); "" = the generative card's default
    anomaly_polarity: str = ""
    target: int = -1  # class explained; -1 = the predicted class
    methods: List[str] = field(default_factory=lambda: ["gradient", "integrated-gradients", "gradcam"])
    #: integrated-gradients baseline (``zero``, ``blur``, ``mean``); "" = the model card's default, else zero
    baseline: str = ""
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
    #: the user said "run anyway" to the input's fit problems, for this one run (never stored)
    confirmed_fit: bool = transient_field(False)


@dataclass(frozen=True)
class AttributionInputs:
    """What :meth:`AttributionViewerLogic.prepare` read from the nodes (main thread) for ``compute``.

    Attributes:
        image_node: the input volume node (maps are named after it).
        image: the input volume ``(Z, Y, X)``.
        lesion: the reference lesion, 0/1 on the image grid; ``None`` without one.
        model: the classifier's path; ``""`` = none (then ``methods`` is empty).
        anomaly_model: the generative model (path or name); ``""`` = no anomaly map.
        anomaly_polarity: what its map shows, checked; ``""`` = the generative card's default.
        methods: attribution method names (``clinicalai.attribution.METHODS``).
        target: the class explained; ``None`` = the predicted class.
        baseline: the integrated-gradients baseline, checked; ``""`` = the model card's default.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        fit_warnings: the fit problems the user accepted before the run (messages).
    """

    image_node: Any
    image: Volume
    lesion: Optional[Volume] = None
    model: str = ""
    anomaly_model: str = ""
    anomaly_polarity: str = ""
    methods: Tuple[str, ...] = ()
    target: Optional[int] = None
    baseline: str = ""
    device: str = "auto"
    fit_warnings: Tuple[str, ...] = ()


@dataclass
class AttributionOutcome:
    """What ``compute`` hands to ``apply``: the engines' own results and the tables.

    Attributes:
        attributions: method -> the engine's ``AttributionMap`` (on the input grid).
        anomaly: the generative model's ``AnomalyResult``; ``None`` without one.
        metrics: one row per map against the reference lesion (empty without one).
        correlations: Spearman correlation of every pair of maps.
    """

    attributions: Dict[str, "AttributionMap"]
    anomaly: Optional["AnomalyResult"]
    metrics: List[Dict[str, Any]] = field(default_factory=list)
    correlations: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def maps(self) -> Dict[str, Volume]:
        """Map name (method, or ``"anomaly"``) -> the map volume, in the order they were made."""
        maps = {method: a.volume for method, a in self.attributions.items()}
        if self.anomaly is not None:
            maps["anomaly"] = self.anomaly.map
        return maps

    @property
    def signed(self) -> Dict[str, bool]:
        """Map name -> whether its values are signed (an anomaly map never is)."""
        signed = {method: bool(a.signed) for method, a in self.attributions.items()}
        if self.anomaly is not None:
            signed["anomaly"] = False
        return signed

    @property
    def summary(self) -> Dict[str, Any]:
        """The run as the scene keeps it: explained class, the model's prediction and input
        warnings (from the first map), the anomaly score."""
        summary: Dict[str, Any] = {}
        first = next(iter(self.attributions.values()), None)
        if first is not None:
            summary.update(target=first.target, target_name=first.target_name, prediction=jsonable(first.prediction),
                           warnings=list(first.warnings))
        if self.anomaly is not None:
            summary.update(anomaly_score=float(self.anomaly.score), anomaly_score_name=str(self.anomaly.score_name))
        return summary


class AttributionViewerLogic(WorkflowLogic[AttributionViewerParameters, AttributionInputs, AttributionOutcome]):
    """AttributionViewer's MRML logic (desktop module and browser app)."""

    module_name = "AttributionViewer"
    parameters_class = AttributionViewerParameters

    def prepare(self, params: AttributionViewerParameters) -> AttributionInputs:
        node, image = self.input_volume(params.input_volume)
        image.require_volumetric().require_finite()
        if not params.model and not params.anomaly_model:
            raise InputError("choose a classifier model (and/or a generative model for an anomaly map)")
        if params.model and not params.methods:
            raise InputError("choose at least one attribution method")
        lesion = mask_from_node(self.scene, params.lesion, image, "reference lesion")
        baseline = ""
        if params.baseline:  # the scene or a page may hold any text: checked here, one clear error
            from ..attribution.methods import baseline_name  # heavy (pydantic): loaded on first use

            baseline = baseline_name(params.baseline, "integrated-gradients baseline")
        polarity = ""
        if params.anomaly_polarity:  # any text, as the baseline: checked before any work
            from ..generative.anomaly import polarity_name  # heavy (torch): loaded on first use

            polarity = polarity_name(params.anomaly_polarity, "the anomaly map's polarity")
        model = str(chosen_model_path(params.model, "")) if params.model else ""
        return AttributionInputs(
            image_node=node,
            image=image,
            lesion=lesion,
            model=model,
            anomaly_model=params.anomaly_model,
            anomaly_polarity=polarity,
            methods=tuple(params.methods) if params.model else (),
            target=None if params.target is None or params.target < 0 else int(params.target),
            baseline=baseline,
            device=params.device,
            fit_warnings=self.require_fit(params, image, [model, params.anomaly_model], node=node),
        )

    def compute(
        self, inputs: AttributionInputs, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> AttributionOutcome:
        steps = len(inputs.methods) + (1 if inputs.anomaly_model else 0)
        attributions = self._attribution_maps(inputs, steps, progress, cancel)
        anomaly = self._anomaly_map(inputs, steps, progress, cancel)
        outcome = AttributionOutcome(attributions, anomaly)
        for name, vol in outcome.maps.items():
            if not vol.same_grid(inputs.image, atol=1e-4):
                raise InputError(f"the {name} map is not on the input grid (engine bug)")
        check_cancel(cancel)
        outcome.metrics = _metric_rows(outcome, inputs.lesion)
        outcome.correlations = _correlation_rows(outcome.maps)
        report(progress, 1.0, "done")
        return outcome

    def _attribution_maps(self, inputs: AttributionInputs, steps: int, progress: Optional[ProgressCallback],
                          cancel: Optional[CancelToken]) -> Dict[str, "AttributionMap"]:
        """One map per method, each its share ``1 / steps`` of the progress."""
        if not inputs.methods:
            return {}
        from ..attribution import attribute  # heavy (torch): loaded on the first run

        report(progress, 0.0, "loading classifier")
        model = self.models.get(inputs.model, inputs.device)
        out: Dict[str, "AttributionMap"] = {}
        for i, method in enumerate(inputs.methods):
            check_cancel(cancel)
            report(progress, i / steps, f"{method}")
            out[method] = attribute(model, inputs.image, method, target=inputs.target, **method_options(inputs, method),
                                    progress=scaled(progress, i / steps, (i + 1) / steps), cancel=cancel)
        return out

    def _anomaly_map(self, inputs: AttributionInputs, steps: int, progress: Optional[ProgressCallback],
                     cancel: Optional[CancelToken]) -> Optional["AnomalyResult"]:
        """The generative model's anomaly map (the last step), scored against the lesion by
        the engine with the card's own threshold; ``None`` without a generative model."""
        if not inputs.anomaly_model:
            return None
        from ..generative import anomaly  # heavy (torch): loaded on the first run

        check_cancel(cancel)
        report(progress, (steps - 1) / steps, "anomaly map")
        generative = self.models.get(inputs.anomaly_model, inputs.device)
        return anomaly(inputs.image, generative, progress=scaled(progress, (steps - 1) / steps, 1.0), cancel=cancel,
                       lesion=inputs.lesion, polarity=inputs.anomaly_polarity or None)

    def apply(self, params: AttributionViewerParameters, inputs: AttributionInputs, result: AttributionOutcome) -> AttributionViewerParameters:
        image_node = inputs.image_node
        nodes = []
        for name, vol in result.maps.items():
            # named for a reader: the image and the method in words ("brain - Integrated gradients")
            node = add_heatmap_node(self.scene, vol, f"{image_node.GetName()} - {label(name)}", signed=result.signed[name])
            node.SetAttribute(METHOD_ATTRIBUTE, name)
            nodes.append(node)
        params.maps = [n.GetID() for n in nodes]
        params.metrics_table = add_table_node(self.scene, result.metrics, self.output_name(image_node, "map metrics")).GetID() if result.metrics else None
        params.correlation_table = (
            add_table_node(self.scene, result.correlations, self.output_name(image_node, "map correlation")).GetID() if result.correlations else None
        )
        show_side_by_side(self.scene, image_node, nodes)
        summary = result.summary
        summary["warnings"] = with_warnings(summary.get("warnings") or [], inputs.fit_warnings)
        params.summary = summary
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
        with scene_transaction(self.scene):
            seg = add_segmentation_node(self.scene, vol.with_array(mask), with_name, [{"name": with_name, "value": 1, "color": (1.0, 0.8, 0.0)}])
        params.threshold = fraction
        params.threshold_segmentation = seg.GetID()
        self.set_parameters(params)
        return seg

    def randomization_rows(
        self, inputs: AttributionInputs, method: Optional[str] = None,
        progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
    ) -> List[Dict[str, Any]]:
        """The randomised-model sanity check (Adebayo et al. 2018) of ``method`` (default: the
        first chosen) as table rows; no MRML (a worker thread may run it). ``inputs`` from
        :meth:`prepare`."""
        from ..attribution import randomization_check  # heavy (torch): loaded on first use

        if not inputs.methods:
            raise InputError("the randomised-model check needs a classifier and a method")
        method = method or inputs.methods[0]
        model = self.models.get(inputs.model, inputs.device)
        result = randomization_check(model, inputs.image, method, target=inputs.target, progress=progress, cancel=cancel,
                                     **method_options(inputs, method))
        return randomization_table_rows(result)

    def add_randomization_table(self, image_node: Any, rows: List[Dict[str, Any]]) -> Any:
        """A table node of :meth:`randomization_rows` (main thread); returns it."""
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
        return self.add_randomization_table(inputs.image_node, rows)


def method_options(inputs: AttributionInputs, method: str) -> Dict[str, Any]:
    """The engine options of ``method`` from the panel: the integrated-gradients baseline when
    the user chose one (none: the engine takes the model card's default)."""
    if method == "integrated-gradients" and inputs.baseline:
        return {"baseline": inputs.baseline}
    return {}


def randomization_table_rows(check: "RandomizationCheck") -> List[Dict[str, Any]]:
    """The table rows of a randomised-model check: one row (method, correlations, SSIM,
    threshold, passed)."""
    return [check.to_dict()]


def _metric_rows(outcome: AttributionOutcome, lesion: Optional[Volume]) -> List[Dict[str, Any]]:
    """One row per map of its scores against the reference lesion (none without one)."""
    from ..attribution.metrics import score_map  # heavy: clinicalai.attribution loads torch

    if lesion is None:
        return []
    rows = []
    for name, vol in outcome.maps.items():
        scores = outcome.anomaly.lesion_scores if name == "anomaly" and outcome.anomaly is not None else None
        if not scores:
            # as `clinicalai explain --lesion` scores it (the map as it is: positive = evidence
            # for the target class), so the table and the CLI agree
            scores = score_map(vol.array, lesion.array)
        rows.append({"map": name, **{k: scores.get(k) for k in METRIC_KEYS}})
    return rows


def _correlation_rows(maps: Dict[str, Volume]) -> List[Dict[str, Any]]:
    """The Spearman correlation of every pair of maps."""
    from ..attribution.metrics import map_correlation  # heavy: clinicalai.attribution loads torch

    return [
        {"map A": a, "map B": b, "spearman": map_correlation(maps[a].array, maps[b].array, method="spearman")}
        for a, b in itertools.combinations(maps, 2)
    ]


def show_side_by_side(scene: Any, image_node: Any, map_nodes: List[Any]) -> int:
    """Each map as foreground over the image in its own slice view, linked so they pan / zoom /
    scroll together: the side-by-side layout's views in a GUI with a layout, else the scene's
    slice views in layout-name order. Returns how many views got a map."""
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


def prediction_text(summary: Dict[str, Any]) -> str:
    """The classifier's prediction of the last run in words: the most probable class and its
    probability, e.g. ``"recurrence (P = 0.873)"``; a slice model's is the highest over slices
    (said so). ``""`` when the run had no classifier (an anomaly map only)."""
    prediction = (summary or {}).get("prediction") or {}
    classes, probs = list(prediction.get("classes") or []), list(prediction.get("probabilities") or [])
    if not classes or len(classes) != len(probs):
        return ""
    best = max(range(len(probs)), key=lambda i: probs[i])
    what = "highest P over slices" if prediction.get("per_slice_max") else "P"
    return f"{classes[best]} ({what} = {float(probs[best]):.3f})"


def maps_per_view(map_ids: List[str], n_views: int) -> List[str]:
    """The map node IDs the ``n_views`` side-by-side views show at first: one map per view in
    run order, ``""`` for a view without one. Maps beyond the views are reached by the view's
    map selector (3 methods + an anomaly map in 3 views: the anomaly map is the 4th)."""
    return [map_ids[i] if i < len(map_ids) else "" for i in range(n_views)]

"""PetRecurrence on MRML nodes: P(recurrence) from the fold ensemble, static uptake figures,
and the Grad-CAM map as a heat-coloured foreground over the PET."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, report, scaled
from ..volume import Volume
from .display import add_heatmap_node, set_foreground_opacity, set_heatmap_threshold, show_in_slice_views
from .logic import WorkflowLogic, mask_from_node, node_by_id
from .parameters import node_field
from .tables import add_table_node


@dataclass
class PetRecurrenceParameters:
    """PetRecurrence panel state (saved with the scene)."""

    input_volume: Optional[str] = node_field()
    brain_mask: Optional[str] = node_field()
    lesion: Optional[str] = node_field()
    #: units of a NIfTI / NRRD PET ("suv" or "bqml"); DICOM carries its own; "" = from the data
    units: str = ""
    #: fold model files; empty = the bundled pet-*-fold* models
    models: List[str] = field(default_factory=list)
    device: str = "auto"
    compute_cam: bool = True
    cam_opacity: float = 0.5
    #: Grad-CAM values below this fraction of its maximum are transparent
    cam_threshold: float = 0.2
    cam_volume: Optional[str] = node_field()
    results_table: Optional[str] = node_field()
    #: the last result (probability, label, spread, fold probabilities, warnings, static figures)
    summary: Dict[str, Any] = field(default_factory=dict)


def bundled_pet_models() -> List[str]:
    """The bundled fold models, as the engine finds them (``clinicalai.pet.workflow``)."""
    from ..pet.workflow import bundled_pet_models as engine_bundled

    return [str(p) for p in engine_bundled()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _as_dict(value: Any) -> Dict[str, Any]:
    """The engine's static figures as a dict (``to_dict()`` of its dataclass, or a dict)."""
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return dict(value.to_dict())
    return dict(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


@dataclass
class PetOutcome:
    summary: Dict[str, Any]
    cam: Optional[Volume]


class PetRecurrenceLogic(WorkflowLogic[PetRecurrenceParameters]):
    """PetRecurrence's MRML logic (desktop module and browser app)."""

    module_name = "PetRecurrence"
    parameters_class = PetRecurrenceParameters

    def prepare(self, params: PetRecurrenceParameters) -> Dict[str, Any]:
        node, pet = self.input_volume(params.input_volume, "PET volume")
        pet.require_volumetric("PET").require_finite("PET")
        self._add_dicom_pet_tags(node, pet)
        return {
            "image_node": node,
            "pet": pet,
            "brain_mask": mask_from_node(self.scene, params.brain_mask, pet, "brain mask"),
            "lesion": mask_from_node(self.scene, params.lesion, pet, "lesion VOI"),
            "units": params.units or None,
            "models": list(params.models) or bundled_pet_models(),
            "device": params.device,
            "cam": bool(params.compute_cam),
        }

    @staticmethod
    def _add_dicom_pet_tags(node: Any, pet: Volume) -> None:
        """PET read by Slicer's DICOM module: SUV tags from its first file (desktop only)."""
        uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        if not uids:
            return
        try:
            import slicer

            path = slicer.dicomDatabase.fileForInstance(uids[0])
        except Exception:  # no DICOM database here (browser, tests)
            return
        if path:
            from ..volume.io import read_pet_tags

            pet.metadata["pet"] = read_pet_tags(path)
            pet.modality = "PT"

    def compute(
        self, inputs: Dict[str, Any], progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> PetOutcome:
        from ..pet.workflow import predict_pet

        report(progress, 0.0, "loading models")
        models = [self.models.get(p, inputs["device"]) for p in inputs["models"]]
        result = predict_pet(
            inputs["pet"],
            models,
            units=inputs["units"],
            brain_mask=inputs["brain_mask"],
            lesion=inputs["lesion"],
            cam=inputs["cam"],
            progress=scaled(progress, 0.05, 1.0),
            cancel=cancel,
        )
        summary = {
            "probability": float(result.probability),
            "label": str(result.label),
            "spread": _jsonable(getattr(result, "spread", None)),
            "fold_probabilities": _jsonable(list(getattr(result, "fold_probabilities", []) or [])),
            "warnings": [str(w) for w in (getattr(result, "warnings", None) or [])],
            "static": _jsonable(_as_dict(getattr(result, "static", None))),
            "cam_inside_brain_fraction": _jsonable(getattr(result, "cam_inside_brain_fraction", None)),
        }
        return PetOutcome(summary, getattr(result, "cam", None) if inputs["cam"] else None)

    def apply(self, params: PetRecurrenceParameters, inputs: Dict[str, Any], result: PetOutcome) -> PetRecurrenceParameters:
        image_node = inputs["image_node"]
        rows = [{"quantity": "P(recurrence)", "value": result.summary["probability"]},
                {"quantity": "label", "value": result.summary["label"]}]
        if result.summary.get("spread") is not None:
            rows.append({"quantity": "spread across folds", "value": result.summary["spread"]})
        for i, p in enumerate(result.summary.get("fold_probabilities") or []):
            rows.append({"quantity": f"fold {i}", "value": p})
        for key, value in (result.summary.get("static") or {}).items():
            rows.append({"quantity": key, "value": value})
        for w in result.summary.get("warnings") or []:
            rows.append({"quantity": "warning", "value": w})
        rows = [{"quantity": r["quantity"], "value": _fmt(r["value"])} for r in rows]
        params.results_table = add_table_node(self.scene, rows, self.output_name(image_node, "recurrence")).GetID()
        params.cam_volume = None
        if result.cam is not None:
            cam = result.cam
            if not cam.same_grid(inputs["pet"], atol=1e-4):
                raise InputError("the Grad-CAM map is not on the PET grid (engine bug)")
            peak = float(np.nanmax(cam.array)) if cam.array.size else 0.0
            node = add_heatmap_node(
                self.scene, cam, self.output_name(image_node, "Grad-CAM"), signed=False,
                threshold=params.cam_threshold * peak if peak > 0 else None, window=(0.0, peak if peak > 0 else 1.0),
            )
            params.cam_volume = node.GetID()
            show_in_slice_views(self.scene, background=image_node, foreground=node, opacity=params.cam_opacity)
        params.summary = result.summary
        return params

    # ---------------------------------------------------------------- display controls
    def set_cam_display(self, opacity: Optional[float] = None, threshold: Optional[float] = None) -> None:
        """Opacity slider (all slice views) and threshold slider (fraction of the map maximum)."""
        params = self.get_parameters()
        if opacity is not None:
            params.cam_opacity = float(opacity)
            set_foreground_opacity(self.scene, params.cam_opacity)
        if threshold is not None:
            params.cam_threshold = float(threshold)
            node = node_by_id(self.scene, params.cam_volume, "Grad-CAM volume")
            from .volumes import array_from_image_data

            peak = float(np.nanmax(array_from_image_data(node.GetImageData())))
            set_heatmap_threshold(node, params.cam_threshold * peak if peak > 0 else None)
        self.set_parameters(params)

"""PetRecurrence on MRML nodes: P(recurrence) from the fold ensemble, static uptake figures,
the Grad-CAM map as a heat-coloured foreground over the PET, and the lesion VOI the engine
found (1.6 x background) as a segmentation when the user gave none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, report, scaled
from ..volume import Volume
from .display import add_heatmap_node, set_foreground_opacity, set_heatmap_threshold, show_in_slice_views
from .logic import WorkflowLogic, jump_to_mask, mask_from_node, node_by_id
from .parameters import node_field
from .segmentations import add_segmentation_node
from .tables import add_table_node

#: colour of the computed lesion VOI segment (cyan: apart from the heat map's red-yellow and
#: from the grey PET)
LESION_VOI_COLOR: Tuple[float, float, float] = (0.0, 0.85, 1.0)


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
    #: the segmentation node the run added with the lesion VOI the engine found by the 1.6 x
    #: background threshold (one segment "lesion", on the PET grid); ``None`` when the user
    #: gave a VOI (``lesion``, never overwritten) or nothing was found above the threshold
    lesion_voi: Optional[str] = node_field()
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
    """What :meth:`PetRecurrenceLogic.compute` hands to ``apply`` (no MRML).

    Attributes:
        summary: probability, label, spread, fold probabilities, warnings, static figures.
        cam: Grad-CAM in [0, 1] on the PET grid, array ``(Z, Y, X)``; ``None`` without it.
        lesion_mask: the lesion VOI the static figures used, 0/1 uint8 on the PET grid
            ``(Z, Y, X)`` (the user's VOI, or the one found by the 1.6 x background
            threshold); ``None`` when there is none.
    """

    summary: Dict[str, Any]
    cam: Optional[Volume]
    lesion_mask: Optional[Volume] = None


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
        return PetOutcome(
            summary, getattr(result, "cam", None) if inputs["cam"] else None, getattr(result, "lesion_mask", None)
        )

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
        params.lesion_voi = None
        if not params.lesion and result.lesion_mask is not None:
            # the VOI the engine found: a new node (the user's VOI node, when given, is left alone)
            params.lesion_voi = self._add_lesion_voi_node(image_node, inputs["pet"], result.lesion_mask).GetID()
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

    def _add_lesion_voi_node(self, image_node: Any, pet: Volume, lesion: Volume) -> Any:
        """A segmentation node "<PET name> lesion VOI" with one segment "lesion" (cyan) holding
        ``lesion`` (non-zero = inside), on the PET grid and referencing the PET node."""
        if not lesion.same_grid(pet, atol=1e-4):
            raise InputError("the lesion VOI is not on the PET grid (engine bug)")
        mask = (np.asarray(lesion.array) > 0).astype(np.uint8)
        return add_segmentation_node(
            self.scene,
            pet.with_array(mask, modality="SEG", units="label"),
            self.output_name(image_node, "lesion VOI"),
            [{"name": "lesion", "value": 1, "color": LESION_VOI_COLOR}],
            reference_node=image_node,
        )

    # ---------------------------------------------------------------- lesion VOI
    def lesion_node_id(self, params: Optional[PetRecurrenceParameters] = None) -> Optional[str]:
        """The lesion VOI to show: the user's (``lesion``) when given, else the one the last run
        found (``lesion_voi``); ``None`` when there is neither."""
        params = params if params is not None else self.get_parameters()
        return params.lesion or params.lesion_voi or None

    def jump_to_lesion(self, node_id: Optional[str] = None, grid_node: Any = None) -> Tuple[float, float, float]:
        """Centre every slice view on a lesion VOI (a "go to lesion VOI" button).

        Args:
            node_id: the segmentation (or labelmap) node; default :meth:`lesion_node_id`.
            grid_node: the volume node whose grid the VOI is read on; default the PET input.

        Returns:
            the RAS point (mm) the views were centred on: the VOI voxel nearest to the VOI's
            centre of mass (a curved VOI's centre can lie outside it).

        Raises:
            InputError: no VOI, no PET, or the VOI is empty on the PET grid.
        """
        from .volumes import volume_grid_of_node

        params = self.get_parameters()
        node_id = node_id or self.lesion_node_id(params)
        if not node_id:
            raise InputError("no lesion VOI: choose one, or run PetRecurrence to find one")
        if grid_node is None:
            grid_node = node_by_id(self.scene, params.input_volume, "PET volume")
        node_by_id(self.scene, node_id, "lesion VOI")  # a clear error when it was removed
        grid = volume_grid_of_node(grid_node)
        mask = mask_from_node(self.scene, node_id, grid, "lesion VOI")  # raises when empty on the grid
        return jump_to_mask(self.scene, grid, mask.array)

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

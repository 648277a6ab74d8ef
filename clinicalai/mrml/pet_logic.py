"""PetRecurrence on MRML nodes: P(recurrence) from the fold ensemble, static uptake figures,
the Grad-CAM map as a heat-coloured foreground over the PET, and the lesion VOI the engine
found (1.6 x background) as a segmentation when the user gave none.

Uptake units: what SUV needs comes from the file (DICOM tags, a BIDS ``*_pet.json`` sidecar
beside a NIfTI) and from what the user typed (:class:`~clinicalai.pet.suv.UserDecayData`, over
the file's values). The figures are SUVbw, labelled with its formula, only when all of it is
known; a Bq/mL PET without it is reported in Bq/mL, labelled so. Units are never guessed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..labels import label
from ..pet.calibration import CAM_EVIDENCE_THRESHOLD
from ..pet.suv import SuvConversion, UserDecayData, known_decay_data, uptake_conversion
from ..progress import CancelToken, ProgressCallback, report, scaled
from ..volume import Volume
from ..volume.bids_pet import bids_pet_sidecar, read_bids_pet_sidecar
from ..volume.io import read_pet_tags
from .display import add_heatmap_node, set_foreground_opacity, set_heatmap_threshold, show_in_slice_views
from .parameters import jsonable, node_field, transient_field
from .scene import RASPoint, jump_to_mask, mask_from_node, node_by_id
from .segmentations import add_segmentation_node, show_outline_only
from .tables import add_table_node
from .volumes import (PET_TAGS_ATTRIBUTE, UNITS_ATTRIBUTE, add_volume_node, frames_on_disk, multivolume_frames,
                      node_to_volume, shown_time_point, volume_grid_of_node)
from .workflow import WorkflowLogic, with_warnings

if TYPE_CHECKING:  # pragma: no cover - typing only: the PET workflow needs torch
    from ..pet.workflow import PetResult

#: colour of the computed lesion VOI segment (cyan: a colour the heat map (display.HEAT_STOPS) never takes, and
#: unlike the grey PET)
LESION_VOI_COLOR: Tuple[float, float, float] = (0.0, 0.85, 1.0)


@dataclass
class PetRecurrenceParameters:
    """PetRecurrence panel state (saved with the scene)."""

    input_volume: Optional[str] = node_field()
    brain_mask: Optional[str] = node_field()
    lesion: Optional[str] = node_field()
    #: units of a NIfTI / NRRD PET ("suv" or "bqml"); DICOM and a BIDS sidecar carry their own;
    #: "" = from the file (no default: a file that does not say them cannot be run)
    units: str = ""
    #: what SUV needs, typed by the user (fills in or overrides the file's): body weight (kg),
    #: injected dose (MBq), injection and scan times (ISO date-time, or hh:mm on the scan's day);
    #: ``None`` / "" = from the file
    weight_kg: Optional[float] = None
    injected_mbq: Optional[float] = None
    injection_time: str = ""
    scan_time: str = ""
    #: a dynamic PET: minutes after injection whose whole frames make the static scan, "START-END"
    #: (the node's file is read again and averaged, :mod:`clinicalai.pet.dynamic`); "" = the node
    static_window: str = ""
    #: fold model files; empty = the bundled pet-*-fold* models
    models: List[str] = field(default_factory=list)
    device: str = "auto"
    compute_cam: bool = True
    cam_opacity: float = 0.5
    #: map values (Grad-CAM x P(recurrence), in [0, 1]) below this are transparent
    cam_threshold: float = CAM_EVIDENCE_THRESHOLD
    cam_volume: Optional[str] = node_field()
    #: the segmentation node the run added with the lesion VOI the engine found by the 1.6 x
    #: background threshold (one segment "lesion", on the PET grid); ``None`` when the user
    #: gave a VOI (``lesion``, never overwritten) or nothing was found above the threshold
    lesion_voi: Optional[str] = node_field()
    results_table: Optional[str] = node_field()
    #: the last result (probability, label, spread, fold probabilities, warnings, static figures)
    summary: Dict[str, Any] = field(default_factory=dict)
    #: the user said "run anyway" to the input's fit problems, for this one run (never stored)
    confirmed_fit: bool = transient_field(False)


def node_to_volume_tags(node: Any) -> Dict[str, Any]:
    """The PET tags a reader stored on ``node`` (:data:`PET_TAGS_ATTRIBUTE`); ``{}`` when none."""
    import json

    text = node.GetAttribute(PET_TAGS_ATTRIBUTE) if hasattr(node, "GetAttribute") else None
    return dict(json.loads(text)) if text else {}


def typed_decay_fields(weight_kg: Any = None, injected_mbq: Any = None, injection_time: Any = None,
                       scan_time: Any = None) -> Dict[str, Any]:
    """The :class:`PetRecurrenceParameters` fields of what a GUI's fields hold (text or numbers;
    "" = from the file), checked by :meth:`UserDecayData.parse`.

    Raises:
        InputError: one sentence for the first wrong value (not a number, not positive, not a
            time, the scan before the injection).
    """
    typed = UserDecayData.parse(weight_kg, injected_mbq, injection_time, scan_time)
    return {"weight_kg": typed.weight_kg, "injected_mbq": typed.injected_mbq,
            "injection_time": typed.injection_time or "", "scan_time": typed.scan_time or ""}


def bundled_pet_models() -> List[str]:
    """The bundled fold models, as the engine finds them (``clinicalai.pet.workflow``)."""
    from ..pet.workflow import bundled_pet_models as engine_bundled  # heavy (torch): on first use

    return [str(p) for p in engine_bundled()]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class PetInputs:
    """What :meth:`PetRecurrenceLogic.prepare` read from the nodes (main thread) for ``compute``.

    Attributes:
        image_node: the PET node (results are named after it).
        pet: the PET volume ``(Z, Y, X)``.
        brain_mask, lesion: 0/1 masks on the PET grid; ``None`` = found by the engine.
        units: ``"suv"`` / ``"bqml"`` for a PET without units in its header; ``None`` = from the data.
        models: fold model paths.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        cam: whether to compute Grad-CAM.
        decay: weight, dose and times the user typed (checked); ``None`` = none typed.
        tags: the PET tags the run uses: the file's with ``decay`` over them.
        uptake: what the uptake figures will be (SUVbw and its formula, or Bq/mL and why).
        fit_warnings: the fit problems the user accepted before the run (messages).
        static_of: the dynamic PET's node when ``pet`` is its static scan over a window (the
            results then go on a new node of that scan); ``None`` = ``pet`` is the node's image.
    """

    image_node: Any
    pet: Volume
    brain_mask: Optional[Volume] = None
    lesion: Optional[Volume] = None
    units: Optional[str] = None
    models: Tuple[str, ...] = ()
    device: str = "auto"
    cam: bool = True
    decay: Optional[UserDecayData] = None
    tags: Optional[Dict[str, Any]] = None
    uptake: Optional[SuvConversion] = None
    fit_warnings: Tuple[str, ...] = ()
    static_of: Any = None


def pet_summary(result: "PetResult") -> Dict[str, Any]:
    """The JSON-able summary of a prediction the panels show and the scene keeps: probability,
    label, spread, fold probabilities, warnings, static figures, Grad-CAM inside the brain."""
    return {
        "probability": float(result.probability),
        "label": str(result.label),
        "spread": jsonable(result.spread),
        "fold_probabilities": jsonable(list(result.fold_probabilities)),
        "warnings": [str(w) for w in result.warnings],
        # folds disagree or P near 0.5 (clinicalai.pet.calibration): the panels say "uncertain"
        "uncertain": bool(getattr(result, "uncertain", False)),
        "uncertain_reasons": [str(r) for r in getattr(result, "uncertain_reasons", [])],
        "static": jsonable(result.static.to_dict()),
        "cam_inside_brain_fraction": jsonable(result.cam_inside_brain_fraction),
        # what the uptake figures are: SUVbw with the formula used, or Bq/mL and why not SUV
        "uptake": str(result.suv_conversion.get("label") or ""),
        "uptake_quantity": str(result.suv_conversion.get("quantity") or ""),
    }


@dataclass
class PetOutcome:
    """What :meth:`PetRecurrenceLogic.compute` hands to ``apply`` (no MRML): the engine's
    ``PetResult`` as the scene keeps it.

    Attributes:
        summary: :func:`pet_summary` of the result.
        cam: the Grad-CAM as shown, ``PetResult.cam_evidence()`` (Grad-CAM x P(recurrence),
            brain only; [0, 1]) on the PET grid, array ``(Z, Y, X)``; ``None`` without it.
        lesion_mask: the lesion VOI the static figures used, 0/1 uint8 on the PET grid
            ``(Z, Y, X)`` (the user's VOI, or the one found by the 1.6 x background
            threshold); ``None`` when there is none.
    """

    summary: Dict[str, Any]
    cam: Optional[Volume]
    lesion_mask: Optional[Volume] = None

    @classmethod
    def of(cls, result: "PetResult", with_cam: bool) -> "PetOutcome":
        return cls(pet_summary(result), result.cam_evidence() if with_cam else None, result.lesion_mask)


class PetRecurrenceLogic(WorkflowLogic[PetRecurrenceParameters, PetInputs, PetOutcome]):
    """PetRecurrence's MRML logic (desktop module and browser app)."""

    module_name = "PetRecurrence"
    parameters_class = PetRecurrenceParameters

    def prepare(self, params: PetRecurrenceParameters) -> PetInputs:
        node = node_by_id(self.scene, params.input_volume, "PET volume")
        # a multi-volume holds every frame and shows none: only its static scan is an image
        pet = None if multivolume_frames(node) > 1 else node_to_volume(node)
        if pet is not None:
            pet.require_volumetric("PET").require_finite("PET")
        decay = UserDecayData.parse(params.weight_kg, params.injected_mbq, params.injection_time, params.scan_time)
        static, static_notes = self.static_scan(node, pet, params.static_window)
        if static is not None:
            pet = static
        file_tags = dict(static.metadata.get("pet") or {}) if static is not None else self.file_pet_tags(node)
        if file_tags:
            pet.metadata["pet"] = file_tags
            pet.modality = "PT"
        tags = decay.apply_to(file_tags)
        units = params.units or None
        models = tuple(params.models) or tuple(bundled_pet_models())
        uptake = self._uptake(tags, units, pet.units)
        brain_mask = mask_from_node(self.scene, params.brain_mask, pet, "brain mask")
        lesion = mask_from_node(self.scene, params.lesion, pet, "lesion VOI")
        # the first fold's card, as the engine's own warning does: the folds share one input spec
        fit = self.require_fit(params, pet, models[:1], "the PET")
        return PetInputs(
            image_node=node,
            pet=pet,
            brain_mask=brain_mask,
            lesion=lesion,
            units=units,
            models=models,
            device=params.device,
            cam=bool(params.compute_cam),
            decay=None if decay.empty else decay,
            tags=tags,
            uptake=uptake,
            fit_warnings=tuple(fit) + static_notes,
            static_of=node if static is not None else None,
        )

    @staticmethod
    def static_scan(node: Any, shown: Optional[Volume], window_text: str) -> Tuple[Optional[Volume], Tuple[str, ...]]:
        """The static scan of ``window_text`` ("START-END", minutes after injection) of the
        dynamic PET ``node`` shows one frame of, or holds (:func:`clinicalai.mrml.volumes.shown_time_point`:
        a 4D NIfTI Slicer read, a sequence or a multi-volume of DICOM frames), averaged by
        :func:`clinicalai.pet.dynamic.static_from_dynamic`; ``None`` without a window; and
        sentences for the result's warnings.

        Raises:
            InputError: no window for a node that shows one frame of several (Slicer's reader
                keeps a 4D NIfTI's first frame without a word, the first minute after the
                injection; a sequence shows the frame browsed to, not the static scan); a window
                for a node of no dynamic PET, or of a sequence whose frames' files are not known.
        """
        from ..pet.dynamic import parse_static_window, static_from_dynamic

        point = shown_time_point(node)
        if not str(window_text or "").strip():
            if point is not None:
                which = "the first" if point.shown == 0 else f"frame {point.shown + 1}"
                reader = " (Slicer reads a 4D file's first frame)" if point.source is not None else ""
                what = f"holds all {point.frames} frames" if point.whole else \
                    f"shows {which} of the {point.frames} frames"
                raise InputError(
                    f"{node.GetName()} {what} of {point.of}{reader}: give a static window, minutes after the "
                    "injection (START-END, the window of your protocol's static scan), to average its frames")
            return None, ()
        window = parse_static_window(str(window_text))
        if point is None:
            raise InputError(f"a static window averages the frames of a dynamic PET; {node.GetName()} shows no frame "
                             "of a 4D NIfTI or of a sequence (open a dynamic DICOM series as its static scan in the "
                             "browser, or with clinicalai.mrml.masks.open_file_as(..., static_window=...))")
        source, series_uid = frames_on_disk(point)
        if source is None:
            raise InputError(f"the frames of {point.of} cannot be averaged here: a static window needs each frame's "
                             "start and duration, which only the scanner's DICOM files (found through Slicer's DICOM "
                             "database) or a BIDS-PET sidecar give (load the series through the DICOM module, or open "
                             "its folder, or the NIfTI with its sidecar, with a static window in the browser or with "
                             "clinicalai pet --static-window)")
        static = static_from_dynamic(source, window, series_uid=series_uid)
        if shown is None or static.same_grid(shown, atol=1e-4):
            return static, ()
        # slicer-core's volume reader drops the direction of a 4D NIfTI (measured: an oblique
        # file's first frame came out axis-aligned); the static scan keeps the file's grid
        return static, (f"{node.GetName()} (the frame as Slicer shows it) is not on the grid of "
                        f"{Path(source).name}; the static scan and the results are on the file's grid",)

    def uptake(self, params: PetRecurrenceParameters) -> SuvConversion:
        """What a run with ``params`` would report: SUVbw (``quantity``, ``label`` with the
        formula, ``details`` with weight, dose, times) or Bq/mL and why not SUV. For the panels
        to show before a run what is known, and which fields are missing.

        Raises:
            InputError: no PET, units unknown (neither the file nor ``params.units`` says them),
                or a wrong value (typed or in the file).
        """
        node = node_by_id(self.scene, params.input_volume, "PET volume")
        decay = UserDecayData.parse(params.weight_kg, params.injected_mbq, params.injection_time, params.scan_time)
        return self._uptake(decay.apply_to(self.file_pet_tags(node)), params.units or None,
                            node.GetAttribute(UNITS_ATTRIBUTE) or None)

    def known_from_file(self, node_id: Optional[str]) -> Dict[str, str]:
        """What the PET's file says of units and SUV inputs, as text for the panels' fields:
        ``source`` ("DICOM", "BIDS sidecar <name>"; "" when the file says nothing), ``units``
        (``BQML``, ``GML``...; "" unknown), and ``weight_kg``, ``injected_mbq``,
        ``injection_time``, ``scan_time`` when the file has them.

        Raises:
            InputError: no such node, or its sidecar cannot be read.
        """
        tags = self.file_pet_tags(node_by_id(self.scene, node_id, "PET volume"))
        if not tags:
            return {"source": "", "units": ""}
        return {"source": str(tags.get("TagSource") or "DICOM"), "units": str(tags.get("Units") or ""),
                **known_decay_data(tags)}

    @staticmethod
    def _uptake(tags: Dict[str, Any], units: Optional[str], image_units: Optional[str]) -> SuvConversion:
        if not tags.get("Units") and not units and not image_units:
            raise InputError("this PET does not say its units (a NIfTI / NRRD without a BIDS *_pet.json sidecar): "
                             "choose Bq/mL or SUV")
        return uptake_conversion(tags, units or (None if tags.get("Units") else image_units))

    @staticmethod
    def file_pet_tags(node: Any) -> Dict[str, Any]:
        """The PET tags (DICOM keywords) of the file ``node`` was read from; ``{}`` when none.

        From, in order: the node's attribute (a PET read by :func:`clinicalai.volume.read_volume`,
        DICOM or NIfTI with a sidecar); the first file of a series read by Slicer's DICOM module
        (desktop); the BIDS-PET sidecar beside a NIfTI read by Slicer's reader.
        """
        pet = node_to_volume_tags(node)
        if pet:
            return pet
        uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        if uids:
            try:
                import slicer

                path = slicer.dicomDatabase.fileForInstance(uids[0])
            except Exception:  # no DICOM database here (browser, tests)
                path = None
            if path:
                return read_pet_tags(path)
        storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
        sidecar = bids_pet_sidecar(storage.GetFileName()) if storage is not None and storage.GetFileName() else None
        if sidecar is not None:
            return read_bids_pet_sidecar(sidecar)[0]
        return {}

    def compute(
        self, inputs: PetInputs, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> PetOutcome:
        from ..pet.workflow import predict_pet  # heavy (torch): loaded on the first run

        report(progress, 0.0, "loading models")
        models = [self.models.get(p, inputs.device) for p in inputs.models]
        result = predict_pet(
            inputs.pet,
            models,
            units=inputs.units,
            brain_mask=inputs.brain_mask,
            lesion=inputs.lesion,
            cam=inputs.cam,
            progress=scaled(progress, 0.05, 1.0),
            cancel=cancel,
            tags=inputs.tags,
            bqml_fallback=True,  # no SUV inputs: Bq/mL, labelled so (prepare refused unknown units)
        )
        return PetOutcome.of(result, inputs.cam)

    def apply(self, params: PetRecurrenceParameters, inputs: PetInputs, result: PetOutcome) -> PetRecurrenceParameters:
        image_node = inputs.image_node
        if inputs.static_of is not None:
            # the scan the result is about: a node of its own, beside the frame Slicer shows
            made = inputs.pet.metadata["static_from_frames"]
            image_node = add_volume_node(self.scene, inputs.pet, self.output_name(
                inputs.static_of, f"static {made['averaged_min'][0]:g}-{made['averaged_min'][1]:g} min"))
            show_in_slice_views(self.scene, background=image_node)
        params.results_table = add_table_node(self.scene, _result_rows(result.summary), self.output_name(image_node, "recurrence")).GetID()
        params.lesion_voi = None
        if not params.lesion and result.lesion_mask is not None:
            # the VOI the engine found: a new node (the user's VOI node, when given, is left alone)
            params.lesion_voi = self._add_lesion_voi_node(image_node, inputs.pet, result.lesion_mask).GetID()
        params.cam_volume = None
        if result.cam is not None:
            node = self._add_cam_node(image_node, inputs.pet, result.cam, params.cam_threshold)
            params.cam_volume = node.GetID()
            show_in_slice_views(self.scene, background=image_node, foreground=node, opacity=params.cam_opacity)
        params.summary = dict(result.summary, warnings=with_warnings(result.summary.get("warnings") or [], inputs.fit_warnings))
        return params

    def _add_cam_node(self, image_node: Any, pet: Volume, cam: Volume, threshold: float) -> Any:
        """A heat-map node "<PET name> Grad-CAM" holding :attr:`PetOutcome.cam`, values below
        ``threshold`` transparent. The window is [0, 1] whatever the case, not [0, peak]: the map
        is weighted by P(recurrence), and a dim map must look dim."""
        if not cam.same_grid(pet, atol=1e-4):
            raise InputError("the Grad-CAM map is not on the PET grid (engine bug)")
        peak = float(np.nanmax(cam.array)) if cam.array.size else 0.0
        return add_heatmap_node(
            self.scene, cam, self.output_name(image_node, "Grad-CAM"), signed=False,
            threshold=threshold, window=(0.0, max(1.0, peak)),
        )

    def _add_lesion_voi_node(self, image_node: Any, pet: Volume, lesion: Volume) -> Any:
        """A segmentation node "<PET name> lesion VOI" with one segment "lesion" (cyan) holding
        ``lesion`` (non-zero = inside), on the PET grid and referencing the PET node; drawn as
        an outline so the Grad-CAM inside it stays visible."""
        if not lesion.same_grid(pet, atol=1e-4):
            raise InputError("the lesion VOI is not on the PET grid (engine bug)")
        mask = (np.asarray(lesion.array) > 0).astype(np.uint8)
        return show_outline_only(add_segmentation_node(
            self.scene,
            pet.with_array(mask, modality="SEG", units="label"),
            self.output_name(image_node, "lesion VOI"),
            [{"name": "lesion", "value": 1, "color": LESION_VOI_COLOR}],
            reference_node=image_node,
        ))

    # ---------------------------------------------------------------- lesion VOI
    def lesion_node_id(self, params: Optional[PetRecurrenceParameters] = None) -> Optional[str]:
        """The lesion VOI to show: the user's (``lesion``) when given, else the one the last run
        found (``lesion_voi``); ``None`` when there is neither."""
        params = params if params is not None else self.get_parameters()
        return params.lesion or params.lesion_voi or None

    def jump_to_lesion(self, node_id: Optional[str] = None, grid_node: Any = None) -> RASPoint:
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
        """Opacity slider (all slice views) and threshold slider (Grad-CAM x P(recurrence),
        the map's own values in [0, 1])."""
        params = self.get_parameters()
        if opacity is not None:
            params.cam_opacity = float(opacity)
            set_foreground_opacity(self.scene, params.cam_opacity)
        if threshold is not None:
            params.cam_threshold = float(threshold)
            set_heatmap_threshold(node_by_id(self.scene, params.cam_volume, "Grad-CAM volume"), params.cam_threshold)
        self.set_parameters(params)


def _result_rows(summary: Dict[str, Any]) -> List[Dict[str, str]]:
    """The results table of a :func:`pet_summary`: ``[{"quantity", "value"}]``, values as text."""
    rows = [{"quantity": "uptake", "value": summary.get("uptake") or "n/a"},
            {"quantity": "P(recurrence)", "value": summary["probability"]},
            {"quantity": "label", "value": summary["label"]}]
    if summary.get("uncertain"):
        rows.append({"quantity": "uncertain", "value": "; ".join(summary.get("uncertain_reasons") or []) or "yes"})
    if summary.get("spread") is not None:
        rows.append({"quantity": "spread across folds", "value": summary["spread"]})
    for i, p in enumerate(summary.get("fold_probabilities") or []):
        rows.append({"quantity": f"fold {i}", "value": p})
    for key, value in (summary.get("static") or {}).items():
        rows.append({"quantity": label(key), "value": value})
    for w in summary.get("warnings") or []:
        rows.append({"quantity": "warning", "value": w})
    return [{"quantity": r["quantity"], "value": _fmt(r["value"])} for r in rows]

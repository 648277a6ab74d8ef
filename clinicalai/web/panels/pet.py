"""PetRecurrence panel: P(recurrence) from the fold ensemble, static uptake figures, the
Grad-CAM heat map over the PET with opacity / threshold, the lesion VOI (the user's, or the
one the engine found by the 1.6 x background threshold) to centre the views on, save / download.
All work is :class:`PetRecurrenceLogic`'s.

Units: no default. The panel shows what the file says (DICOM, BIDS ``*_pet.json`` sidecar) and
has fields for weight, injected dose, injection and scan time (checked on the server); the
line above Run says what the figures will be: SUVbw with its formula when all of it is known,
Bq/mL otherwise. A run that fails leaves no earlier result on screen."""

from __future__ import annotations

from typing import Any, Dict, List

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...errors import ClinicalAIError
from ...labels import label
from ...mrml.pet_logic import PetRecurrenceLogic, PetRecurrenceParameters, typed_decay_fields
from ...pet.calibration import CAM_EVIDENCE_THRESHOLD, CAM_EVIDENCE_UNITS
from ...mrml.scene import jump_to_voxel
from ...mrml.segmentations import segmentation_to_labels
from ...mrml.volumes import array_from_image_data, node_to_volume, volume_grid_of_node
from ...outputs import write_json
from ...volume.io import write_volume
from . import common
from .base import Panel


class PetPanel(Panel):
    key = "pet"
    title = "PetRecurrence"
    segmentation_choices = "masks"
    mask_keys = ("brain_mask", "lesion")

    def __init__(self, app) -> None:
        super().__init__(app)
        self.logic = PetRecurrenceLogic(app.context)
        self.params = None
        # lists the page chooses from: recorded on the server too (Panel.offer / Panel.choice)
        self.offer(
            unit_items=_unit_items(""),
            devices=common.device_items(),
            masks=[{"title": "(none)", "value": ""}],
        )
        self.set(masks_note="")
        self.set(
            # no default: "" = what the file says; a file that says nothing cannot run
            units="",
            # what SUV needs, typed (text: checked on the server); placeholders show the file's
            weight_kg="",
            injected_mbq="",
            injection_time="",
            scan_time="",
            known={},
            # what the figures will be ("SUVbw" / "Bq/mL"; "" = cannot run) and why, in words
            uptake_quantity="",
            uptake_text="",
            device="auto",
            cam=True,
            brain_mask="",
            lesion="",
            # the VOI the last run found when none was chosen (node ID, name); "" when none
            lesion_voi="",
            lesion_voi_name="",
            opacity=0.5,
            threshold=CAM_EVIDENCE_THRESHOLD,
            has_result=False,
            probability=-1.0,
            probability_text="",
            label="",
            spread="",
            folds="",
            warnings=[],
            uncertain="",
            static_rows=[],
            saved=[],
            vr=False,
        )
        self.state.change(self.k("opacity"))(lambda **_: self._display(opacity=True))
        self.state.change(self.k("threshold"))(lambda **_: self._display(threshold=True))
        self.state.change(self.k("vr"))(lambda **_: self._show_3d())
        for name in ("units", "weight_kg", "injected_mbq", "injection_time", "scan_time"):
            self.state.change(self.k(name))(lambda **_: self._show_uptake())

    def build_ui(self) -> None:
        with v3.VCard(variant="flat"):
            v3.VCardTitle("PetRecurrence")
            v3.VCardSubtitle("18F-FDOPA PET: recurrence vs treatment-related change")
            with v3.VCardText():
                with html.Div(classes="d-flex"):
                    v3.VSelect(label="image units", items=(self.k("unit_items"),), v_model=(self.k("units"),), density="compact", hide_details=True, classes="mr-2", id="pet-units")
                    v3.VSelect(label="device", items=(self.k("devices"),), v_model=(self.k("device"),), density="compact", hide_details=True)
                html.Div("for SUV (typed values replace the file's):", classes="text-caption mt-1")
                with html.Div(classes="d-flex"):
                    for name, title, field_id in (("weight_kg", "weight (kg)", "pet-weight"), ("injected_mbq", "injected dose (MBq)", "pet-dose")):
                        v3.VTextField(label=title, v_model=(self.k(name),), placeholder=(f"{self.k('known')}.{name} || ''",),
                                      persistent_placeholder=True, density="compact", hide_details=True, classes="mr-1", id=field_id)
                with html.Div(classes="d-flex mt-1"):
                    for name, title, field_id in (("injection_time", "injection time", "pet-injection-time"), ("scan_time", "scan time", "pet-scan-time")):
                        v3.VTextField(label=title, v_model=(self.k(name),), placeholder=(f"{self.k('known')}.{name} || 'hh:mm or YYYY-MM-DD hh:mm'",),
                                      persistent_placeholder=True, density="compact", hide_details=True, classes="mr-1", id=field_id)
                html.Div(
                    f"uptake shown as: {{{{ {self.k('uptake_text')} }}}}",
                    id="pet-uptake",
                    classes=(f"'text-caption mt-1 ' + ({self.k('uptake_quantity')} ? '' : 'text-error')",),
                )
                v3.VSelect(label="brain mask", items=(self.k("masks"),), v_model=(self.k("brain_mask"),), density="compact", hide_details=True, classes="mt-1", id="pet-brain-mask")
                with html.Div(classes="d-flex align-center mt-1"):
                    v3.VSelect(label="lesion VOI", items=(self.k("masks"),), v_model=(self.k("lesion"),), density="compact", hide_details=True, classes="mr-1")
                    v3.VBtn(icon="mdi-crosshairs-gps", click=self.go_to_lesion, size="small", variant="text", id="pet-lesion-go",
                            title="centre the views on the lesion VOI (the one chosen, else the one the run found)",
                            disabled=(f"!{self.k('lesion')} && !{self.k('lesion_voi')}",))
                html.Div(f"{{{{ {self.k('masks_note')} }}}}", id="pet-masks-note", classes="text-caption")
                v3.VCheckbox(label="Grad-CAM map", v_model=(self.k("cam"),), density="compact", hide_details=True)
                html.Div("bundled fold models: synthetic demo, not for clinical use", classes="text-caption text-warning")
                self.run_row(self.run)
                with html.Div(v_if=(self.k("has_result"),)):
                    html.Div(
                        f"P(recurrence) = {{{{ {self.k('probability_text')} }}}}",
                        id="pet-probability",
                        classes="text-h6 mt-2",
                    )
                    html.Div(f"{{{{ {self.k('label')} }}}}", id="pet-label", classes="text-body-1")
                    html.Div(f"uncertain: {{{{ {self.k('uncertain')} }}}}", v_if=(self.k("uncertain"),),
                             id="pet-uncertain", classes="text-body-2 text-warning")
                    html.Div(f"uptake: {{{{ {self.k('result_uptake')} }}}}", id="pet-result-uptake", classes="text-caption")
                    html.Div(f"spread across folds: {{{{ {self.k('spread')} }}}}; folds: {{{{ {self.k('folds')} }}}}", classes="text-caption")
                    html.Div(
                        f"lesion VOI found (1.6 x background): {{{{ {self.k('lesion_voi_name')} }}}}",
                        v_if=(self.k("lesion_voi"),),
                        id="pet-lesion-voi",
                        classes="text-caption",
                    )
                    common.warning_alerts(self.k("warnings"), "pet-warnings")
                    common.table(self.k("static_rows"), ["quantity", "value"], "pet-static")
                    common.slider("opacity", self.k("opacity"), 0, 1, 0.05, "pet-opacity")
                    common.slider("threshold (Grad-CAM x P)", self.k("threshold"), 0, 0.95, 0.05, "pet-threshold")
                    v3.VSwitch(label="show Grad-CAM in 3D", v_model=(self.k("vr"),), hide_details=True, density="compact")
                    v3.VBtn("Go to Grad-CAM peak", click=self.go_to_peak, size="small", variant="tonal", classes="mr-1", id="pet-peak")
                    v3.VBtn("Save", click=self.save, size="small", color="secondary", id="pet-save")
                    common.saved_list(self.k("saved"), "pet-saved")

    # units and SUV inputs -----------------------------------------------------------
    def _uptake_params(self) -> Dict[str, Any]:
        """Units and the typed weight, dose and times, checked here (the page's values are untrusted)."""
        typed = typed_decay_fields(self.get("weight_kg"), self.get("injected_mbq"), self.get("injection_time"), self.get("scan_time"))
        return {"units": self.choice("units", "unit_items", "units"), **typed}

    def _show_uptake(self) -> None:
        """The line above Run: SUVbw (formula, values) or Bq/mL and why, or what is wrong."""
        node = self.app.volume_node
        if node is None:
            self.set(uptake_quantity="", uptake_text="open a PET volume first")
            return
        try:
            conversion = self.logic.uptake(PetRecurrenceParameters(input_volume=node.GetID(), **self._uptake_params()))
        except ClinicalAIError as exc:
            self.set(uptake_quantity="", uptake_text=str(exc))
            return
        self.set(uptake_quantity=conversion.quantity, uptake_text=conversion.description)

    def on_volume_changed(self, node: Any) -> None:
        super().on_volume_changed(node)
        self._clear_result()
        known: Dict[str, str] = {}
        if node is not None:
            try:
                known = self.logic.known_from_file(node.GetID())
            except ClinicalAIError as exc:
                known = {"source": "", "units": "", "error": str(exc)}
        self.offer(unit_items=_unit_items(_file_units_title(known)))
        # the typed values belonged to the previous patient
        self.set(known=known, units="", weight_kg="", injected_mbq="", injection_time="", scan_time="")
        self._show_uptake()

    def _clear_result(self) -> None:
        """No result on screen: before a run (so a failed run leaves none) and for a new volume."""
        self.params = None
        self.set(has_result=False, probability=-1.0, probability_text="", label="", spread="", folds="", warnings=[], uncertain="",
                 static_rows=[], saved=[], lesion_voi="", lesion_voi_name="", result_uptake="", vr=False)

    def run(self, confirmed: bool = False) -> None:
        """Run on the volume on show; ``confirmed``: the user answered "Run anyway" (checked
        against the server's pending question, :meth:`prepare_or_ask`)."""
        self._clear_result()
        if self.app.volume_node is None:
            self.set(error="open a PET volume first")
            return
        try:
            params = PetRecurrenceParameters(
                input_volume=self.app.volume_node.GetID(),
                brain_mask=self.choice("brain_mask", "masks", "brain mask") or None,
                lesion=self.choice("lesion", "masks", "lesion VOI") or None,
                **self._uptake_params(),
                device=self.choice("device", "devices", "device"),
                compute_cam=bool(self.get("cam")),
                cam_opacity=self.number("opacity", "opacity", 0.0, 1.0),
                cam_threshold=self.number("threshold", "threshold", 0.0, 1.0),
            )
            params, inputs = self.prepare_or_ask(params, self.run, confirmed)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        if inputs is None:  # the input does not fit the model: the dialog asks
            return

        def compute(progress, cancel):
            return self.logic.compute(inputs, progress, cancel)

        def apply(result):
            self.params = self.logic.finish(params, inputs, result)
            self._show_summary(self.params.summary)
            voi = self.app.context.scene.GetNodeByID(self.params.lesion_voi) if self.params.lesion_voi else None
            self.set(lesion_voi=voi.GetID() if voi else "", lesion_voi_name=voi.GetName() if voi else "")
            self.refresh_inputs()  # the found VOI is offered in the VOI choosers too

        self.start_job(compute, apply)

    def _show_summary(self, summary: Dict[str, Any]) -> None:
        p = float(summary["probability"])
        spread = summary.get("spread")
        if isinstance(spread, dict):
            spread = ", ".join(f"{k} {common.fmt(v)}" for k, v in spread.items())
        elif isinstance(spread, (int, float)):
            spread = f"{spread:.3f}"
        rows: List[Dict[str, Any]] = [{"quantity": "uptake", "value": summary.get("uptake") or "n/a"}]
        rows += [{"quantity": label(k), "value": common.fmt(v)} for k, v in (summary.get("static") or {}).items()]
        if summary.get("cam_inside_brain_fraction") is not None:
            rows.append({"quantity": "Grad-CAM inside brain", "value": common.fmt(summary["cam_inside_brain_fraction"])})
        self.set(
            has_result=True,
            probability=p,
            probability_text=f"{p:.3f}",
            label=summary.get("label", ""),
            spread=spread if spread is not None else "n/a",
            folds=", ".join(f"{float(x):.3f}" for x in summary.get("fold_probabilities") or []),
            warnings=list(summary.get("warnings") or []),
            # a non-empty text shows the "uncertain" line (folds disagree or P near 0.5)
            uncertain="; ".join(summary.get("uncertain_reasons") or []) if summary.get("uncertain") else "",
            static_rows=rows,
            result_uptake=summary.get("uptake") or "n/a",
            saved=[],
            vr=False,
        )

    def _display(self, opacity: bool = False, threshold: bool = False) -> None:
        if self.params is None or not self.params.cam_volume:
            return
        try:
            self.logic.set_cam_display(
                opacity=self.number("opacity", "opacity", 0.0, 1.0) if opacity else None,
                threshold=self.number("threshold", "threshold", 0.0, 1.0) if threshold else None,
            )
        except ClinicalAIError as exc:
            self.set(error=str(exc))
        self.app.render_views()

    def go_to_peak(self) -> None:
        """Centre the slice views on the Grad-CAM maximum (where the network looked most)."""
        import numpy as np

        if self.params is None or not self.params.cam_volume:
            return
        node = self.app.context.scene.GetNodeByID(self.params.cam_volume)
        array = array_from_image_data(node.GetImageData())
        jump_to_voxel(self.app.context.scene, volume_grid_of_node(node), np.unravel_index(int(np.nanargmax(array)), array.shape))
        self.app.render_views()

    def go_to_lesion(self) -> None:
        """Centre the slice views on the lesion VOI chosen in the panel, else on the one the last
        run found (the heat map there)."""
        try:
            node_id = self.choice("lesion", "masks", "lesion VOI")
            if not node_id and self.params is not None:
                node_id = self.params.lesion_voi or ""  # the server's record, not the page's state
            if self.app.volume_node is None:
                raise ClinicalAIError("open a PET volume first")
            self.logic.jump_to_lesion(node_id or None, self.app.volume_node)
            self.app.render_views()
        except ClinicalAIError as exc:
            self.set(error=str(exc))

    def _show_3d(self) -> None:
        if self.params is None or not self.params.cam_volume:
            return
        node = self.app.context.scene.GetNodeByID(self.params.cam_volume)
        common.show_in_3d(self.app, node, bool(self.get("vr")))

    def save(self) -> None:
        if self.params is None:
            self.set(error="run PetRecurrence first")
            return
        try:
            image = self.app.context.scene.GetNodeByID(self.params.input_volume)
            stem = common.result_stem(image.GetName(), "pet")
            folder = common.results_folder(self.app)
            paths = []
            if self.params.cam_volume:
                cam_path = folder / f"{stem}_gradcam.nii.gz"
                write_volume(node_to_volume(self.app.context.scene.GetNodeByID(self.params.cam_volume)), cam_path)
                paths.append(cam_path)
            voi = self.app.context.scene.GetNodeByID(self.params.lesion_voi) if self.params.lesion_voi else None
            if voi is not None:
                labels = segmentation_to_labels(voi, volume_grid_of_node(image))
                voi_path = folder / f"{stem}_lesion_voi.seg.nrrd"
                write_volume(labels, voi_path, segments=[{k: x[k] for k in ("name", "value", "color")} for x in labels.metadata["segments"]])
                paths.append(voi_path)
            json_path = folder / f"{stem}.json"
            report = {"input": image.GetName(), "units": self.params.units, **self.params.summary}
            if self.params.cam_volume:
                report["gradcam_map"] = CAM_EVIDENCE_UNITS + ", brain only"
            write_json(report, json_path)
            paths.append(json_path)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.set(saved=common.saved_links(paths, self.app), error="")
        self.app.panels["data"].refresh()


def _file_units_title(known: Dict[str, str]) -> str:
    """The title of the "from the file" units item: what the file says, or that it says nothing."""
    if known.get("error"):
        return f"from the file: {known['error']}"
    if known.get("units"):
        return f"from the file: {known['units']} ({known.get('source') or 'DICOM'})"
    return "from the file: not stated (choose)"


def _unit_items(file_title: str) -> List[Dict[str, str]]:
    return [
        {"title": file_title or "from the file (DICOM / BIDS sidecar)", "value": ""},
        {"title": "Bq/mL (activity concentration)", "value": "bqml"},
        {"title": "SUV (the values are already SUVbw)", "value": "suv"},
    ]

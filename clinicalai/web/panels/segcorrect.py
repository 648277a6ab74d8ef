"""SegCorrect panel: segmentation + NVAE correction, the per-slice table with accept / reject,
the segment editor on the result, save / download. All work is :class:`SegCorrectLogic`'s."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...errors import ClinicalAIError
from ...mrml.scene import jump_to_slice
from ...mrml.segcorrect_logic import SegCorrectLogic, SegCorrectParameters
from ...mrml.segmentations import segmentation_to_labels
from ...mrml.tables import table_rows
from ...mrml.volumes import volume_grid_of_node
from ...outputs import write_json
from ...segcorrect import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER
from ...volume.io import write_volume
from . import common
from .base import Panel

#: columns of the per-slice table the logic makes that the panel shows (others: the JSON report)
HIDDEN = ("reason",)


class SegCorrectPanel(Panel):
    key = "segcorrect"
    title = "SegCorrect"
    segmentation_choices = "input_segs"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.logic = SegCorrectLogic(app.context)
        self.params = None
        app.segmentation_listeners.append(self._on_segmentation_edited)
        segmenters = common.model_choices("segmentation", DEFAULT_SEGMENTER)
        correctors = common.model_choices("mask-correction", DEFAULT_CORRECTOR)
        #: the per-slice rows shown, as the server made them (the page's copy is not trusted)
        self._rows: List[Dict[str, Any]] = []
        # lists the page chooses from: recorded on the server too (Panel.offer / Panel.choice)
        self.offer(segmenters=segmenters, correctors=correctors, devices=common.device_items(),
                   input_segs=[{"title": "(none)", "value": ""}])
        self.set(
            segmenter=segmenters[0]["value"] if segmenters else "",
            corrector=correctors[0]["value"] if correctors else "",
            card="",
            device="auto",
            correct=True,
            input_seg="",
            rows=[],
            columns=[],
            final_voxels=-1,
            opacity=0.5,
            has_result=False,
            # the last run's warnings about its input (reader, model fit), one sentence each
            warnings=[],
            saved=[],
        )
        self._update_card()
        self.state.change(self.k("segmenter"), self.k("corrector"))(lambda **_: self._update_card())
        self.state.change(self.k("opacity"))(lambda **_: self._apply_opacity())

    # UI -----------------------------------------------------------------------
    def build_ui(self) -> None:
        with v3.VCard(variant="flat"):
            v3.VCardTitle("SegCorrect")
            v3.VCardSubtitle("cardiac MRI: segment RV / MYO / LV, correct the mask, review per slice")
            with v3.VCardText():
                v3.VSelect(label="segmenter", items=(self.k("segmenters"),), v_model=(self.k("segmenter"),), density="compact", hide_details=True, classes="mb-1")
                v3.VSelect(label="corrector", items=(self.k("correctors"),), v_model=(self.k("corrector"),), density="compact", hide_details=True, classes="mb-1")
                v3.VSelect(label="correct an existing mask instead", items=(self.k("input_segs"),), v_model=(self.k("input_seg"),), density="compact", hide_details=True, classes="mb-1")
                with html.Div(classes="d-flex"):
                    v3.VSelect(label="device", items=(self.k("devices"),), v_model=(self.k("device"),), density="compact", hide_details=True, classes="mr-2")
                    v3.VCheckbox(label="correct", v_model=(self.k("correct"),), density="compact", hide_details=True)
                html.Div(f"{{{{ {self.k('card')} }}}}", classes="text-caption text-warning", id="segcorrect-card")
                self.run_row(self.run)
                common.warning_alerts(self.k("warnings"), "segcorrect-warnings")
                with html.Div(v_if=(self.k("has_result"),)):
                    html.Div(
                        f"final segmentation: {{{{ {self.k('final_voxels')} }}}} voxels",
                        id="segcorrect-voxels",
                        classes="text-body-2 my-1",
                    )
                    v3.VSlider(label="opacity", v_model=(self.k("opacity"),), min=0, max=1, step=0.05, hide_details=True, density="compact", id="segcorrect-opacity")
                    with html.Div(classes="d-flex my-1"):
                        v3.VBtn("Accept all", click=self.accept_all, size="small", variant="tonal", classes="mr-1", id="segcorrect-accept-all")
                        v3.VBtn("Reject all", click=self.reject_all, size="small", variant="tonal", classes="mr-1", id="segcorrect-reject-all")
                        v3.VBtn("Edit", click=self.edit, size="small", variant="tonal", classes="mr-1", id="segcorrect-edit")
                        v3.VBtn("Save", click=self.save, size="small", color="secondary", id="segcorrect-save")
                    common.saved_list(self.k("saved"), "segcorrect-saved")

                    def actions() -> None:
                        v3.VBtn(icon="mdi-crosshairs-gps", size="x-small", variant="text", click=(self.jump, "[i]"), id=("`segcorrect-go-${i}`",), title="show this slice")
                        v3.VBtn(icon="mdi-check", size="x-small", variant="text", color="success", click=(self.accept_row, "[i]"), id=("`segcorrect-accept-${i}`",), title="accept the correction")
                        v3.VBtn(icon="mdi-close", size="x-small", variant="text", color="error", click=(self.reject_row, "[i]"), id=("`segcorrect-reject-${i}`",), title="reject the correction")
                        v3.VBtn(icon="mdi-skip-next", size="x-small", variant="text", click=(self.next_best_row, "[i]"), id=("`segcorrect-next-${i}`",), title="next best candidate")

                    common.dynamic_table(self.k("rows"), self.k("columns"), "segcorrect-table", actions=actions)

    def _update_card(self) -> None:
        try:  # only a model the server offered is ever described (the card is read from disk)
            model = (self.choice("corrector", "correctors", "corrector") if self.get("input_seg")
                     else self.choice("segmenter", "segmenters", "segmenter"))
        except ClinicalAIError as exc:
            self.set(card=str(exc))
            return
        self.set(card=common.card_line(model))

    # run ----------------------------------------------------------------------
    def run(self) -> None:
        if self.app.volume_node is None:
            self.set(error="open a volume first")
            return
        try:
            params = SegCorrectParameters(
                input_volume=self.app.volume_node.GetID(),
                input_segmentation=self.choice("input_seg", "input_segs", "input segmentation") or None,
                segmenter_model=self.choice("segmenter", "segmenters", "segmenter"),
                corrector_model=self.choice("corrector", "correctors", "corrector"),
                device=self.choice("device", "devices", "device"),
                correct=bool(self.get("correct")),
            )
            inputs = self.logic.prepare(params)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return

        def compute(progress, cancel):
            return self.logic.compute(inputs, progress, cancel)

        def apply(result):
            self.params = self.logic.finish(params, inputs, result)
            self._after_result()

        self.set(warnings=[])  # the last run's warnings are not this run's
        self.start_job(compute, apply)

    def _after_result(self) -> None:
        # the final segmentation replaces the mask it corrected in the views (the logic hides
        # the raw and corrected ones already): one overlay, whose opacity the slider sets
        source = self.params.input_segmentation and self.app.context.scene.GetNodeByID(self.params.input_segmentation)
        if source and source is not self._final_node() and source.GetDisplayNode() is not None:
            source.GetDisplayNode().SetVisibility(False)
        self.app.edit_segmentation(self._final_node(), open_editor=False)
        self._apply_opacity()
        self.refresh_inputs()
        self.set(has_result=True, saved=[], warnings=list(self.params.warnings or []))
        self._refresh_rows()

    def on_volume_changed(self, node: Any) -> None:
        super().on_volume_changed(node)
        self.set(warnings=[])  # they were about the previous image
        if self.params is not None and (node is None or self.params.input_volume != node.GetID()):
            # the review belongs to the image it was made on (its masks stay in the scene, hidden)
            self.params = None
            self._rows = []
            self.set(has_result=False, rows=[], final_voxels=-1, saved=[])

    def _final_node(self):
        if self.params is None or not self.params.output_segmentation:
            return None
        return self.app.context.scene.GetNodeByID(self.params.output_segmentation)

    def _final_labels(self):
        node = self._final_node()
        image = self.app.context.scene.GetNodeByID(self.params.input_volume)
        return segmentation_to_labels(node, volume_grid_of_node(image))

    def _refresh_rows(self) -> None:
        """The logic's per-slice table (its columns), the current decision and the voxels of
        the final segmentation on each slice (so accept / reject shows its effect)."""
        if self.params is None:
            return
        labels = self._final_labels()
        per_slice = (np.asarray(labels.array) > 0).reshape(labels.shape[0], -1).sum(axis=1)
        table = self.app.context.scene.GetNodeByID(self.params.slice_table) if self.params.slice_table else None
        source = table_rows(table) if table is not None else [{"slice": k} for k in range(labels.shape[0])]
        rows: List[Dict[str, Any]] = []
        columns: List[str] = []
        for row in source:
            k = int(row["slice"])
            shown = {c: common.fmt(v) for c, v in row.items() if c not in HIDDEN}
            shown["slice"] = k
            if k < len(self.params.decisions):
                shown["decision"] = self.params.decisions[k]
            shown["voxels"] = int(per_slice[k])
            columns.extend(c for c in shown if c not in columns)
            rows.append(shown)
        self._rows = rows
        self.set(rows=rows, columns=columns, final_voxels=int(per_slice.sum()))

    def _on_segmentation_edited(self, node) -> None:
        final = self._final_node()
        if final is not None and node is final:
            self._refresh_rows()

    def _apply_opacity(self) -> None:
        node = self._final_node()
        if node is not None and node.GetDisplayNode() is not None:
            try:
                opacity = self.number("opacity", "opacity", 0.0, 1.0)
            except ClinicalAIError as exc:
                self.set(error=str(exc))
                return
            node.GetDisplayNode().SetOpacity(opacity)
            self.app.render_views()

    # review -------------------------------------------------------------------
    def _set_correction(self, accept: bool, slices: Optional[List[int]]) -> None:
        if self.params is None:
            self.set(error="run SegCorrect first")
            return
        try:
            self.params = self.logic.set_correction(accept, slices, self.params)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.set(error="")
        self._refresh_rows()

    def _row_slice(self, i: int) -> int:
        """The slice of row ``i`` of the server's rows (the page sends only the index)."""
        try:
            return int(self._rows[int(i)]["slice"])
        except (TypeError, ValueError, IndexError):
            raise ClinicalAIError(f"no row {str(i)[:20]!r} in the slice table") from None

    def accept_row(self, i: int) -> None:
        self._review_row(True, i)

    def reject_row(self, i: int) -> None:
        self._review_row(False, i)

    def _review_row(self, accept: bool, i: Any) -> None:
        try:
            k = self._row_slice(i)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self._set_correction(accept, [k])

    def next_best_row(self, i: Any) -> None:
        """The slice of row ``i`` takes its next-best valid candidate (:meth:`SegCorrectLogic.next_best`)."""
        if self.params is None:
            self.set(error="run SegCorrect first")
            return
        try:
            self.logic.next_best(self._row_slice(i), self.params)  # updates self.params' decisions in place
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.set(error="")
        self._refresh_rows()

    def accept_all(self) -> None:
        self._set_correction(True, None)

    def reject_all(self) -> None:
        self._set_correction(False, None)

    def jump(self, i: int) -> None:
        if self.params is None:
            return
        try:
            image = self.app.context.scene.GetNodeByID(self.params.input_volume)
            jump_to_slice(self.app.context.scene, image, self._row_slice(i))
            self.app.render_views()
        except ClinicalAIError as exc:
            self.set(error=str(exc))

    def edit(self) -> None:
        node = self._final_node()
        if node is None:
            self.set(error="run SegCorrect first")
            return
        self.app.edit_segmentation(node)

    # save ---------------------------------------------------------------------
    def save(self) -> None:
        if self.params is None:
            self.set(error="run SegCorrect first")
            return
        try:
            labels = self._final_labels()
            image = self.app.context.scene.GetNodeByID(self.params.input_volume)
            stem = common.result_stem(image.GetName(), "segcorrect")
            folder = common.results_folder(self.app)
            segments = [{k: s[k] for k in ("name", "value", "color")} for s in labels.metadata.get("segments", [])]
            seg_path, nii_path, json_path = folder / f"{stem}.seg.nrrd", folder / f"{stem}.nii.gz", folder / f"{stem}.json"
            write_volume(labels, seg_path, segments=segments)
            write_volume(labels, nii_path)
            write_json(
                {
                    "input": image.GetName(),
                    "segmenter": self.params.segmenter_model,  # what ran, not the page's state
                    "corrector": self.params.corrector_model,
                    "decisions": list(self.params.decisions),
                    "slices": self._rows,
                    "segments": segments,
                    "final_voxels": int((labels.array > 0).sum()),
                },
                json_path,
            )
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.set(saved=common.saved_links([seg_path, nii_path, json_path], self.app), error="")
        self.app.panels["data"].refresh()

"""SegCorrect panel: segmentation + NVAE correction, the per-slice table with accept / reject,
the segment editor on the result, save / download. All work is :class:`SegCorrectLogic`'s."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3

from ...errors import ClinicalAIError
from ...mrml.scene import jump_to_slice, slice_index_shown
from ...mrml.segcorrect_logic import REVIEW_LAYERS, STRATEGY_TITLES, SegCorrectLogic, SegCorrectParameters
from ...mrml.segmentations import segment_legend, segmentation_to_labels
from ...mrml.tables import table_rows
from ...mrml.volumes import dicom_files_of, volume_grid_of_node
from ...outputs import write_json
from ...segcorrect import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER
from ...volume.io import write_volume
from . import common
from .base import Panel

#: columns of the per-slice table the logic makes that the panel shows (others: the JSON report)
HIDDEN = ("reason",)
#: what the review toggle says of each of the run's segmentations (REVIEW_LAYERS)
LAYER_TITLES = {"final": "final", "raw": "raw", "corrected": "corrected"}
#: seconds the slice-on-screen mark waits for more slider moves (a drag sends many)
SLICE_MARK_DELAY_S = 0.15
#: page code: scroll the table to the row of the slice on screen ("nearest": no move when shown)
SCROLL_TO_CURRENT_ROW = (
    "window.setTimeout(() => { const r = window.document.querySelector('#segcorrect-table .ca-row-current');"
    " if (r) r.scrollIntoView({block: 'nearest'}); }, 50)"
)


class SegCorrectPanel(Panel):
    key = "segcorrect"
    title = "SegCorrect"
    segmentation_choices = "input_segs"
    # the mask to correct: label maps and segmentations on the grid of the image on show only
    mask_keys = ("input_seg",)

    def __init__(self, app) -> None:
        super().__init__(app)
        self.logic = SegCorrectLogic(app.context)
        self.params = None
        app.segmentation_listeners.append(self._on_segmentation_edited)
        segmenters = common.model_choices("segmentation", DEFAULT_SEGMENTER)
        correctors = common.model_choices("mask-correction", DEFAULT_CORRECTOR)
        #: the per-slice rows shown, as the server made them (the page's copy is not trusted)
        self._rows: List[Dict[str, Any]] = []
        #: slice nodes observed for the slice on screen: node ID -> (node, observer tag)
        self._slice_observers: Dict[str, Any] = {}
        self._mark_pending = False
        # lists the page chooses from: recorded on the server too (Panel.offer / Panel.choice)
        self.offer(segmenters=segmenters, correctors=correctors, devices=common.device_items(),
                   input_segs=[{"title": "(none)", "value": ""}], layers=[], strategies=[{"title": t, "value": v} for v, t in STRATEGY_TITLES.items()])
        self.set(
            segmenter=segmenters[0]["value"] if segmenters else "",
            corrector=correctors[0]["value"] if correctors else "",
            card="",
            device="auto",
            correct=True,
            strategy="gate",
            input_seg="",
            masks_note="",
            rows=[],
            columns=[],
            titles={},
            final_voxels=-1,
            opacity=0.5,
            # which of the run's segmentations the views draw (one of the offered "layers")
            layer="final",
            # [{"name", "color": "#rrggbb"}] of the segments drawn
            legend=[],
            # the slice on screen (1-based, as the rows are numbered); 0: none of the rows
            shown_slice=0,
            has_result=False,
            # the last run's warnings about its input (reader, model fit), one sentence each
            warnings=[],
            saved=[],
        )
        self._update_card()
        self.state.change(self.k("segmenter"), self.k("corrector"), self.k("input_seg"))(lambda **_: self._update_card())
        self.state.change(self.k("opacity"))(lambda **_: self._apply_opacity())
        self.state.change(self.k("layer"))(lambda **_: self._show_layer())

    # UI -----------------------------------------------------------------------
    def build_ui(self) -> None:
        with v3.VCard(variant="flat"):
            v3.VCardTitle("SegCorrect")
            v3.VCardSubtitle("cardiac MRI: segment RV / MYO / LV, correct the mask, review per slice")
            with v3.VCardText():
                v3.VSelect(label="segmenter", items=(self.k("segmenters"),), v_model=(self.k("segmenter"),), density="compact", hide_details=True, classes="mb-1")
                v3.VSelect(label="corrector", items=(self.k("correctors"),), v_model=(self.k("corrector"),), density="compact", hide_details=True, classes="mb-1")
                v3.VSelect(label="correct an existing mask instead", items=(self.k("input_segs"),), v_model=(self.k("input_seg"),), density="compact", hide_details=True,
                           id="segcorrect-input-seg")
                html.Div(f"{{{{ {self.k('masks_note')} }}}}", id="segcorrect-masks-note", classes="text-caption mb-1")
                with html.Div(classes="d-flex"):
                    v3.VSelect(label="device", items=(self.k("devices"),), v_model=(self.k("device"),), density="compact", hide_details=True, classes="mr-2")
                    v3.VCheckbox(label="correct", v_model=(self.k("correct"),), density="compact", hide_details=True)
                v3.VSelect(label="correction", items=(self.k("strategies"),), v_model=(self.k("strategy"),), density="compact",
                           hide_details=True, classes="mb-1", id="segcorrect-strategy")
                html.Div(f"{{{{ {self.k('card')} }}}}", classes="text-caption text-warning", id="segcorrect-card")
                self.run_row(self.run)
                common.warning_alerts(self.k("warnings"), "segcorrect-warnings")
                with html.Div(v_if=(self.k("has_result"),)):
                    html.Div(
                        f"final segmentation: {{{{ {self.k('final_voxels')} }}}} voxels",
                        id="segcorrect-voxels",
                        classes="text-body-2 my-1",
                    )
                    self._review_ui()
                    common.slider("opacity", self.k("opacity"), 0, 1, 0.05, "segcorrect-opacity")
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

                    common.dynamic_table(self.k("rows"), self.k("columns"), "segcorrect-table", actions=actions, actions_width=128,
                                         current=f"row.slice === {self.k('shown_slice')}", titles_key=self.k("titles"))
                    # the row of the slice on screen scrolled into the table's view (after Vue drew its mark)
                    client.ClientStateChange(value=self.k("shown_slice"), change=SCROLL_TO_CURRENT_ROW)

    def _review_ui(self) -> None:
        """Which segmentation the views draw (raw / corrected / final) and the segments' colours."""
        with html.Div(classes="d-flex align-center flex-wrap my-1"):
            html.Span("show", classes="text-body-2 mr-2")
            with v3.VBtnToggle(v_model=(self.k("layer"),), mandatory=True, density="compact", divided=True,
                               variant="outlined", id="segcorrect-layer"):
                v3.VBtn("{{ l.title }}", v_for=f"l in {self.k('layers')}", key="l.value", value=("l.value",),
                        size="small", id=("`segcorrect-layer-${l.value}`",))
        with html.Div(id="segcorrect-legend", classes="d-flex flex-wrap text-body-2 my-1"):
            with html.Span(v_for=f"s in {self.k('legend')}", key="s.name", classes="ca-legend-item d-flex align-center mr-3"):
                html.Span(classes="ca-legend-swatch mr-1",
                          style=("`display:inline-block; width:12px; height:12px; border:1px solid #666; background:${s.color}`",))
                html.Span("{{ s.name }}", classes="ca-legend-name")

    def _update_card(self) -> None:
        try:  # only a model the server offered is ever described (the card is read from disk)
            model = (self.choice("corrector", "correctors", "corrector") if self.get("input_seg")
                     else self.choice("segmenter", "segmenters", "segmenter"))
        except ClinicalAIError as exc:
            self.set(card=str(exc))
            return
        self.set(card=common.card_line(model))

    # run ----------------------------------------------------------------------
    def run(self, confirmed: bool = False) -> None:
        """Run on the volume on show; ``confirmed``: the user answered "Run anyway" (checked
        against the server's pending question, :meth:`prepare_or_ask`)."""
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
                strategy=self.choice("strategy", "strategies", "correction strategy") or "gate",
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
        nodes = self.logic.review_nodes(self.params)
        self.offer(layers=[{"title": LAYER_TITLES[k], "value": k} for k in REVIEW_LAYERS if k in nodes])
        self.logic.show_layer("final", self.params)
        self._apply_opacity()
        self.refresh_inputs()
        self.set(has_result=True, saved=[], warnings=list(self.params.warnings or []), layer="final",
                 legend=segment_legend(self._final_node()))
        self._refresh_rows()
        self._observe_slices()
        self._mark_shown_slice()

    def on_volume_changed(self, node: Any) -> None:
        super().on_volume_changed(node)
        # the segmenters made for this image's modality first (same models: the choice stays)
        self.offer(segmenters=common.model_choices("segmentation", DEFAULT_SEGMENTER, common.node_modality(node)))
        self.set(warnings=[])  # they were about the previous image
        if self.params is not None and (node is None or self.params.input_volume != node.GetID()):
            # the review belongs to the image it was made on (its masks stay in the scene, hidden)
            self.params = None
            self._rows = []
            self.set(has_result=False, rows=[], final_voxels=-1, saved=[], layer="final", legend=[], shown_slice=0)

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
        page: List[Dict[str, Any]] = []
        columns: List[str] = []
        for row in source:
            k = int(row["slice"])
            kept = {c: common.fmt(v) for c, v in row.items() if c not in HIDDEN}
            kept["slice"] = k
            if k < len(self.params.decisions):
                kept["decision"] = self.params.decisions[k]
            kept["voxels"] = int(per_slice[k])
            columns.extend(c for c in kept if c not in columns)
            rows.append(kept)
            # the page numbers slices from 1, as the slice views' annotations do; the server
            # keeps the voxel index (the decisions and the JSON report are indexed by it)
            page.append({**kept, "slice": k + 1})
        self._rows = rows
        self.set(rows=page, columns=columns, titles=common.column_titles(columns), final_voxels=int(per_slice.sum()))

    def _on_segmentation_edited(self, node) -> None:
        final = self._final_node()
        if final is not None and node is final:
            self._refresh_rows()

    def _apply_opacity(self) -> None:
        """The opacity slider's value on every segmentation of the run (whichever is shown)."""
        if self.params is None:
            return
        try:
            opacity = self.number("opacity", "opacity", 0.0, 1.0)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        for node in self.logic.review_nodes(self.params).values():
            if node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetOpacity(opacity)
        self.app.render_views()

    def _show_layer(self) -> None:
        """Draw the segmentation the toggle chose (checked against those offered), the others hidden."""
        if self.params is None:
            return
        try:
            layer = self.choice("layer", "layers", "segmentation to show") or "final"
            node = self.logic.show_layer(layer, self.params)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.set(error="", legend=segment_legend(node))
        self.app.render_views()

    # the slice on screen, marked in the table ------------------------------------
    def _observe_slices(self) -> None:
        """Watch the slice views (slider, scroll, jump) to mark the row of the slice shown."""
        scene = self.app.context.scene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            if node.GetID() not in self._slice_observers:
                self._slice_observers[node.GetID()] = (node, node.AddObserver("ModifiedEvent", self._schedule_mark))

    def _schedule_mark(self, *_: Any) -> None:
        if self._mark_pending or self.params is None:
            return
        self._mark_pending = True
        self.app.event_loop().call_later(SLICE_MARK_DELAY_S, self._mark_shown_slice)

    def _mark_shown_slice(self) -> None:
        """``shown_slice``: the 1-based slice of the run's image in the first slice view that
        shows one of its slices (Red first), 0 when none does."""
        self._mark_pending = False
        image = self.app.context.scene.GetNodeByID(self.params.input_volume) if self.params is not None else None
        shown = 0
        if image is not None:
            views = sorted((node for node, _ in self._slice_observers.values()), key=lambda n: n.GetLayoutName() != "Red")
            for node in views:
                k = slice_index_shown(node, image)
                if k is not None:
                    shown = k + 1
                    break
        if shown != self.get("shown_slice"):
            self.set(shown_slice=shown)

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
            saved = [seg_path, nii_path]
            dicom_files = dicom_files_of(image)
            if dicom_files:  # an image read from a DICOM series: the result as a DICOM SEG of it, for a PACS
                saved.append(write_volume(labels, folder / f"{stem}.dcm", segments=segments, dicom_series=dicom_files))
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
        self.set(saved=common.saved_links(saved + [json_path], self.app), error="")
        self.app.panels["data"].refresh()

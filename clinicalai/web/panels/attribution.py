"""AttributionViewer panel: attribution maps (and an anomaly map) side by side over the image,
their metrics against a reference lesion, correlation between methods, threshold -> weak
segmentation, the randomised-model check. All work is :class:`AttributionViewerLogic`'s."""

from __future__ import annotations

from typing import Any, Dict, List

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...attribution.metrics import HEADLINE_KEYS
from ...errors import ClinicalAIError
from ...mrml.attribution_logic import AttributionViewerLogic, AttributionViewerParameters, maps_per_view, prediction_text
from ...mrml.model_choices import baseline_choices, polarity_choices
from ...mrml.volumes import node_to_volume
from ...outputs import write_json
from ...volume.io import write_volume
from . import common
from .base import Panel

METHODS = ["gradient", "gradient-x-input", "integrated-gradients", "expected-gradients", "smoothgrad",
           "guided-backprop", "gradcam", "gradcam++", "occlusion"]
#: slice views the maps go into, left to right (registered as the "Maps side by side" layout)
MAP_VIEWS = ("Red", "Map2", "Map3")
SIDE_BY_SIDE = "Maps side by side"
METRIC_COLUMNS = ["map", *HEADLINE_KEYS, "threshold"]


def register_side_by_side_layout(layout_manager) -> None:
    from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

    views = [ViewLayoutDefinition.axial_view()] + [
        ViewLayoutDefinition.slice_view("Axial", label=tag, color="#888888") for tag in MAP_VIEWS[1:]
    ]
    # created now, not lazily: see ClinicalAIWebApp.__init__ (views before the segment editor)
    layout_manager.register_layout(SIDE_BY_SIDE, Layout(LayoutDirection.Horizontal, views), lazy_initialization=False)


class AttributionPanel(Panel):
    key = "attribution"
    title = "AttributionViewer"
    segmentation_choices = "masks"
    mask_keys = ("lesion",)
    # the map views beside Red: linked, so they must start on Red's slice at Red's zoom
    views_like_red = tuple(MAP_VIEWS[1:])

    def __init__(self, app) -> None:
        super().__init__(app)
        self.logic = AttributionViewerLogic(app.context)
        self.params = None
        self._tables: Dict[str, List[Dict[str, Any]]] = {"metrics": [], "correlations": [], "randomization": []}
        classifiers = common.model_choices("classification")
        generative = common.model_choices("anomaly-detection")
        # lists the page chooses from: recorded on the server too (Panel.offer / Panel.choice)
        self.offer(
            models=[{"title": "(none)", "value": ""}] + classifiers,
            anomaly_models=[{"title": "(none)", "value": ""}] + generative,
            methods_all=METHODS,
            baselines=[{"title": b["label"], "value": b["value"]} for b in baseline_choices()],
            polarities=[{"title": p["label"], "value": p["value"]} for p in polarity_choices()],
            masks=[{"title": "(none)", "value": ""}],
            devices=common.device_items(),
            maps=[],
        )
        self.set(
            model=classifiers[0]["value"] if classifiers else "",
            anomaly_model=generative[0]["value"] if generative else "",
            card="",
            methods=["gradient", "gradcam"],
            baseline="",
            anomaly_polarity="",
            target=-1,
            lesion="",
            masks_note="",
            device="auto",
            has_result=False,
            # the classifier's prediction on the input, in words ("" = no classifier ran)
            prediction="",
            # the map node ID each side-by-side view shows ("" = none), chosen per view
            **{f"view_map_{i}": "" for i in range(len(MAP_VIEWS))},
            map_choice="",
            threshold=0.5,
            opacity=0.6,
            metrics=[],
            correlations=[],
            randomization=[],
            # the last run's warnings about its input (reader, model fit), one sentence each
            warnings=[],
            saved=[],
        )
        self._update_card()
        self.state.change(self.k("model"))(lambda **_: self._update_card())
        self.state.change(self.k("opacity"))(lambda **_: self._apply_opacity())
        for i in range(len(MAP_VIEWS)):
            self.state.change(self.k(f"view_map_{i}"))(lambda i=i, **_: self._on_view_map(i))

    def build_ui(self) -> None:
        with v3.VCard(variant="flat"):
            v3.VCardTitle("AttributionViewer")
            v3.VCardSubtitle("explain a classifier; compare with anomaly maps")
            with v3.VCardText():
                v3.VSelect(label="classifier", items=(self.k("models"),), v_model=(self.k("model"),), density="compact", hide_details=True, classes="mb-1")
                html.Div(f"{{{{ {self.k('card')} }}}}", classes="text-caption text-warning")
                v3.VSelect(label="generative model (anomaly map)", items=(self.k("anomaly_models"),), v_model=(self.k("anomaly_model"),), density="compact", hide_details=True, classes="mb-1")
                # which residual the anomaly map shows ("" = the generative card's default)
                v3.VSelect(label="anomaly map shows", items=(self.k("polarities"),), v_model=(self.k("anomaly_polarity"),),
                           v_if=(self.k("anomaly_model"),), density="compact", hide_details=True, classes="mb-1",
                           id="attribution-polarity")
                v3.VSelect(label="methods", items=(self.k("methods_all"),), v_model=(self.k("methods"),), multiple=True, chips=True, density="compact", hide_details=True, classes="mb-1", id="attribution-methods")
                # the integrated-gradients baseline ("" = the model card's default)
                v3.VSelect(label="integrated-gradients baseline", items=(self.k("baselines"),), v_model=(self.k("baseline"),),
                           density="compact", hide_details=True, classes="mb-1", id="attribution-baseline")
                with html.Div(classes="d-flex"):
                    v3.VTextField(label="target class (-1 = predicted)", v_model_number=(self.k("target"),), type="number", density="compact", hide_details=True, classes="mr-2")
                    v3.VSelect(label="device", items=(self.k("devices"),), v_model=(self.k("device"),), density="compact", hide_details=True)
                with html.Div(classes="d-flex align-center mt-1"):
                    v3.VSelect(label="reference lesion", items=(self.k("masks"),), v_model=(self.k("lesion"),), density="compact", hide_details=True, classes="mr-1", id="attribution-lesion")
                    v3.VBtn(icon="mdi-crosshairs-gps", click=self.go_to_lesion, size="small", variant="text", id="attribution-lesion-go",
                            title="centre the views on the reference lesion", disabled=(f"!{self.k('lesion')}",))
                html.Div(f"{{{{ {self.k('masks_note')} }}}}", id="attribution-masks-note", classes="text-caption")
                self.run_row(self.run)
                common.warning_alerts(self.k("warnings"), "attribution-warnings")
                with html.Div(v_if=(self.k("has_result"),)):
                    html.Div(f"prediction: {{{{ {self.k('prediction')} }}}}", v_if=(self.k("prediction"),),
                             id="attribution-prediction", classes="text-body-1 mt-2")
                    html.Div("map in each view (left to right)", classes="text-subtitle-2 mt-2")
                    with html.Div(id="attribution-view-maps"):  # one per row: map names are long
                        for i in range(len(MAP_VIEWS)):
                            v3.VSelect(label=f"view {i + 1}", items=(f"[{{title: '(none)', value: ''}}, ...{self.k('maps')}]",),
                                       v_model=(self.k(f"view_map_{i}"),), density="compact", hide_details=True,
                                       classes="mb-1", id=f"attribution-view-map-{i}")
                    common.slider("opacity", self.k("opacity"), 0, 1, 0.05, "attribution-opacity")
                    html.Div("metrics against the reference lesion", classes="text-subtitle-2 mt-2")
                    common.table(self.k("metrics"), METRIC_COLUMNS, "attribution-metrics")
                    html.Div("correlation between maps", classes="text-subtitle-2 mt-2")
                    common.table(self.k("correlations"), ["map A", "map B", "spearman"], "attribution-correlations")
                    html.Div("weak segmentation from a map", classes="text-subtitle-2 mt-2")
                    v3.VSelect(label="map", items=(self.k("maps"),), v_model=(self.k("map_choice"),), density="compact", hide_details=True)
                    # the fraction of the map's maximum kept
                    common.slider("threshold", self.k("threshold"), 0.05, 1, 0.05, "attribution-threshold-slider")
                    # wraps inside the drawer: Save is never pushed past its edge
                    with html.Div(classes="d-flex flex-wrap mt-1", style="gap: 4px;"):
                        v3.VBtn("Threshold -> segmentation", click=self.threshold_map, size="small", variant="tonal", id="attribution-threshold")
                        v3.VBtn("Randomised-model check", click=self.randomization, size="small", variant="tonal", id="attribution-random",
                                disabled=(f"{self.k('running')}",))
                        v3.VBtn("Save", click=self.save, size="small", color="secondary", id="attribution-save")
                    common.table(self.k("randomization"), ["method", "layer", "spearman", "ssim"], "attribution-randomization")
                    common.saved_list(self.k("saved"), "attribution-saved")

    def _update_card(self) -> None:
        try:  # only a model the server offered is ever described (the card is read from disk)
            model = self.choice("model", "models", "classifier")
        except ClinicalAIError as exc:
            self.set(card=str(exc))
            return
        self.set(card=common.card_line(model))

    def on_segmentation_opened(self, relative: str, node: Any) -> None:
        super().on_segmentation_opened(relative, node)
        if node.GetID() in self.app.choices.offered(self.k("masks")):  # a mask of the image on show
            self.set(lesion=node.GetID())

    def on_volume_changed(self, node: Any) -> None:
        super().on_volume_changed(node)
        # the models made for this image's modality first, the others marked "(PT model)"...
        # (the same models: the choice stays)
        modality, none = common.node_modality(node), [{"title": "(none)", "value": ""}]
        self.offer(models=none + common.model_choices("classification", modality=modality),
                   anomaly_models=none + common.model_choices("anomaly-detection", modality=modality))
        self.set(warnings=[])  # they were about the previous image
        if self.params is not None and (node is None or self.params.input_volume != node.GetID()):
            self._clear_result()

    def _clear_result(self) -> None:
        """No maps, prediction or tables on screen (the maps of another volume: they stay in
        the scene, shown in no view)."""
        self.params = None
        self._tables = {"metrics": [], "correlations": [], "randomization": []}
        self.offer(maps=[])
        self.set(has_result=False, prediction="", map_choice="", saved=[], **self._tables,
                 **{f"view_map_{i}": "" for i in range(len(MAP_VIEWS))})

    def _parameters(self):
        methods = self.choices("methods", "methods_all", "attribution method")
        try:
            target = int(self.get("target") if self.get("target") not in (None, "") else -1)
        except (TypeError, ValueError):
            raise ClinicalAIError(f"the target class must be a whole number, got {self.get('target')!r}") from None
        return AttributionViewerParameters(
            input_volume=self.app.volume_node.GetID() if self.app.volume_node is not None else None,
            model=self.choice("model", "models", "classifier"),
            anomaly_model=self.choice("anomaly_model", "anomaly_models", "generative model"),
            anomaly_polarity=self.choice("anomaly_polarity", "polarities", "anomaly map polarity"),
            target=target,
            methods=methods,
            baseline=self.choice("baseline", "baselines", "integrated-gradients baseline"),
            lesion=self.choice("lesion", "masks", "reference lesion") or None,
            threshold=self.number("threshold", "threshold", 0.0, 1.0),
            device=self.choice("device", "devices", "device"),
        )

    def run(self, confirmed: bool = False) -> None:
        """Run on the volume on show; ``confirmed``: the user answered "Run anyway" (checked
        against the server's pending question, :meth:`prepare_or_ask`)."""
        try:
            params = self._parameters()
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
            self._show(result)

        self.set(warnings=[])  # the last run's warnings are not this run's
        self.start_job(compute, apply)

    def _show(self, result) -> None:
        scene = self.app.context.scene
        nodes = [scene.GetNodeByID(i) for i in self.params.maps]
        # the browser's own layout: the first maps side by side in axial views, linked
        lm = self.app.layout_logic.layout_manager
        with self.state:
            self.state["LayoutButtonState__current_layout_id"] = SIDE_BY_SIDE
        lm.set_layout(SIDE_BY_SIDE)
        vm = self.app.slicer_app.view_manager
        shown = maps_per_view(self.params.maps, len(MAP_VIEWS))
        self.offer(maps=[{"title": n.GetName(), "value": n.GetID()} for n in nodes])
        for i, node_id in enumerate(shown):
            self._show_in_view(i, node_id)
            view = vm.get_view(MAP_VIEWS[i])
            if view is not None:
                view.reset_view()

        def fit() -> None:  # again once the page has laid the new views out
            for tag in MAP_VIEWS:
                view = vm.get_view(tag)
                if view is not None:
                    view.reset_view()

        for delay in (1.0, 3.0):
            self.app.event_loop().call_later(delay, fit)
        self.set(
            has_result=True,
            prediction=prediction_text(self.params.summary),
            **{f"view_map_{i}": node_id for i, node_id in enumerate(shown)},
            map_choice=nodes[0].GetID() if nodes else "",
            saved=[],
            warnings=[str(w) for w in (self.params.summary or {}).get("warnings") or []],
        )
        # the tables as the server made them: the saved report never takes the page's copy
        self._tables = {
            "metrics": [{k: common.fmt(v) for k, v in row.items()} for row in result.metrics],
            "correlations": [{k: common.fmt(v) for k, v in row.items()} for row in result.correlations],
            "randomization": [],
        }
        self.set(**self._tables)

    def _show_in_view(self, i: int, map_id: str) -> None:
        """The map ``map_id`` ("" = none) over the input in side-by-side view ``i``, and the
        view labelled with the map's name."""
        view = self.app.slicer_app.view_manager.get_view(MAP_VIEWS[i])
        if view is None or self.params is None:
            return
        view.set_background_volume_id(self.params.input_volume)
        view.set_foreground_volume_id(map_id or None)
        view.set_foreground_opacity(self._opacity())
        node = self.app.context.scene.GetNodeByID(map_id) if map_id else None
        with self.state:
            labels = dict(self.state["ca_view_labels"] or {})
            labels[MAP_VIEWS[i]] = node.GetName() if node is not None else ""
            self.state["ca_view_labels"] = labels

    def _on_view_map(self, i: int) -> None:
        """The page chose another map for view ``i`` (one the server offered, or none)."""
        if self.params is None:
            return
        try:
            map_id = self.choice(f"view_map_{i}", "maps", "map")
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self._show_in_view(i, map_id)
        self.app.render_views()

    def _opacity(self) -> float:
        try:
            return self.number("opacity", "opacity", 0.0, 1.0)
        except ClinicalAIError:
            return 0.6  # a nonsense value from the page: the default, not an exception

    def _apply_opacity(self) -> None:
        vm = self.app.slicer_app.view_manager
        for tag in MAP_VIEWS:
            view = vm.get_view(tag)
            if view is not None and view.get_foreground_volume_id():
                view.set_foreground_opacity(self._opacity())

    def go_to_lesion(self) -> None:
        """Centre the (linked) map views on the reference lesion."""
        try:
            common.jump_to_segmentation(self.app, self.choice("lesion", "masks", "reference lesion"), "reference lesion")
        except ClinicalAIError as exc:
            self.set(error=str(exc))

    def threshold_map(self) -> None:
        try:
            seg = self.logic.threshold_to_segmentation(self.choice("map_choice", "maps", "map"),
                                                       self.number("threshold", "threshold", 0.0, 1.0))
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.refresh_inputs()
        self.app.info(f"made segmentation '{seg.GetName()}'", tool=self.key)

    def randomization(self, confirmed: bool = False) -> None:
        """The randomised-model check in the background. AttributionViewerLogic's
        ``randomization_check`` runs in one step (fine on the desktop's main thread); here the
        engine call runs on the worker and only the table rows come back to the page.
        ``confirmed``: as :meth:`run`'s (an input that does not fit the model asks first)."""
        if self.params is None:
            return
        try:
            _, inputs = self.prepare_or_ask(self._parameters(), self.randomization, confirmed)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        if inputs is None:
            return
        if not inputs.methods:
            self.set(error="the randomised-model check needs a classifier and a method")
            return

        def compute(progress, cancel):
            return self.logic.randomization_rows(inputs, progress=progress, cancel=cancel)

        def apply(rows: List[Dict[str, Any]]) -> None:
            self._tables["randomization"] = [{k: common.fmt(v) for k, v in r.items()} for r in rows]
            self.set(randomization=self._tables["randomization"])

        self.start_job(compute, apply)

    def save(self) -> None:
        if self.params is None:
            self.set(error="run AttributionViewer first")
            return
        try:
            scene = self.app.context.scene
            image = scene.GetNodeByID(self.params.input_volume)
            stem = common.result_stem(image.GetName(), "attribution")
            folder = common.results_folder(self.app)
            paths = []
            for map_id in self.params.maps:
                node = scene.GetNodeByID(map_id)
                method = node.GetAttribute("ClinicalAI.Method") or node.GetName()
                p = folder / f"{stem}_{common.result_stem(method, 'map').rsplit('_', 1)[0]}.nii.gz"
                write_volume(node_to_volume(node), p)
                paths.append(p)
            json_path = folder / f"{stem}.json"
            write_json({"input": image.GetName(), "model": self.params.model, "methods": list(self.params.methods),
                        **self._tables}, json_path)
            paths.append(json_path)
        except ClinicalAIError as exc:
            self.set(error=str(exc))
            return
        self.set(saved=common.saved_links(paths, self.app), error="")
        self.app.panels["data"].refresh()

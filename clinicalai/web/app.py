"""``clinicalai web``: the SegCorrect, PetRecurrence and AttributionViewer panels in a browser.

One page (trame + trame-slicer): a left toolbar opens one tool at a time in the drawer (Data,
the three panels, Segment Editor, Display), the content area shows Slicer's own slice views and
3D view rendered on the server (VTK offscreen, EGL) and streamed as images. The panels call
:mod:`clinicalai.mrml` exactly as the desktop modules do; this package only adds the page,
the background-thread plumbing (:mod:`clinicalai.web.jobs`) and the server's access rules
(:mod:`clinicalai.web.security`, :mod:`clinicalai.web.http`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from trame.app import TrameApp
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ..errors import ClinicalAIError
from ..mrml.context import MRMLContext
from ..mrml.display import hide_results_of_other_volumes, show_results_of_volume
from ..mrml.segmentations import segmentation_to_labels
from ..mrml.volumes import volume_grid_of_node
from . import http as web_http
from .about import viewer_layout
from .annotations import ViewAnnotations
from . import security
from .panels.attribution import AttributionPanel, register_side_by_side_layout
from .panels.data import DataPanel
from .panels.display import DisplayPanel
from .panels.pet import PetPanel
from .panels.segcorrect import SegCorrectPanel
from .probe import FileProber
from .security import DataRoot

log = logging.getLogger(__name__)


@dataclass
class WebConfig:
    data: DataRoot
    host: str = "127.0.0.1"
    port: int = 8080
    token: Optional[str] = None
    max_upload_mb: float = security.DEFAULT_MAX_UPLOAD_MB
    #: GiB allowed under uploads/ + results/ (None: no quota)
    quota_gb: Optional[float] = security.DEFAULT_QUOTA_GB
    #: seconds without a connected page after which the server exits (0: never; the
    #: multi-user launcher's sessions use it)
    idle_timeout_s: int = 0


def _view_marker_ui(server, view_id, view):
    """Slice/3D view overlay: trame-slicer's gutter plus a marker the tests locate views by."""
    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui
    from trame_slicer.views import SliceView

    html.Span(classes=f"ca-view-marker ca-view-{view_id}", style="display:none")
    # the name of the map the view shows (side-by-side maps), set by the panel that put it
    # there; centred at the top, clear of trame-slicer's buttons in the left corner
    html.Div(
        f"{{{{ ca_view_labels['{view_id}'] }}}}",
        v_if=(f"ca_view_labels && ca_view_labels['{view_id}']",),
        id=f"view-label-{view_id}",
        classes="ca-view-label text-caption px-1",
        style="position:absolute; top:2px; left:50%; transform:translateX(-50%); z-index:2; background:rgba(0,0,0,0.6); color:#fff; pointer-events:none;",
    )
    if isinstance(view, SliceView):
        _corner_annotations_ui(view_id)
        _color_bar_ui(view_id)
        create_vertical_slice_view_gutter_ui(server, view_id, view)
    else:
        create_vertical_view_gutter_ui(server, view_id, view)


#: JPEG quality of every frame a view streams. trame-rca's image scheduler otherwise sends each
#: render twice: a quality-50 frame at once, then the same view at 90 once the view has been
#: still for 5 frame periods. Clinicians read slices while they scroll, so scrolling frames get
#: the full quality too, and each render is one encode and one browser decode instead of two
#: (on two browser test files: about a fifth less CPU in the server and in the browser).
STILL_QUALITY = 90

#: look of the text drawn over a view: readable on black and on a bright image, never catching
#: the mouse (the view under it takes the drag, wheel and hover)
_OVERLAY = "position:absolute; z-index:2; color:#fff; text-shadow:0 0 2px #000,0 0 2px #000; pointer-events:none; font-size:12px;"


def _corner_annotations_ui(view_id: str) -> None:
    """Slicer's corner annotations of a slice view, from the server state ``ca_annotations``
    (:mod:`clinicalai.web.annotations`): patient direction at each edge's middle (the top one
    under the view's map label), slice number and offset at the bottom left above the slice
    slider, the voxel value under the mouse above it."""
    ann = f"ca_annotations['{view_id}']"
    where = {"left": "left:44px; top:50%;", "right": "right:6px; top:50%;",
             "top": "top:22px; left:50%;", "bottom": "bottom:30px; left:50%;"}
    with html.Div(v_if=(f"ca_annotations && {ann}",), classes=f"ca-annotations ca-annotations-{view_id}"):
        for edge, place in where.items():
            html.Div(f"{{{{ {ann}.{edge} }}}}", id=f"view-orient-{edge}-{view_id}", style=_OVERLAY + place)
        html.Div(f"{{{{ {ann}.value }}}}", id=f"view-value-{view_id}", style=_OVERLAY + "left:44px; bottom:62px;")
        html.Div(f"{{{{ {ann}.slice }}}}", id=f"view-slice-{view_id}", style=_OVERLAY + "left:44px; bottom:46px;")


def _color_bar_ui(view_id: str) -> None:
    """A colour bar of the heat map a slice view shows (``ca_colorbars``): its colours from
    min (bottom) to max (top), the range and unit, "0" in the middle of a signed map's bar."""
    bar = f"ca_colorbars['{view_id}']"
    with html.Div(
        v_if=(f"ca_colorbars && {bar}",),
        id=f"view-colorbar-{view_id}",
        classes="ca-colorbar",
        style=_OVERLAY + "right:22px; top:28px; bottom:48px; width:64px;",
        title=(f"{bar}.name",),
    ):
        html.Div(f"{{{{ {bar}.signed ? '+' : '' }}}}{{{{ {bar}.max.toPrecision(3) }}}} {{{{ {bar}.unit }}}}", classes="ca-colorbar-max",
                 style="position:absolute; top:0; right:16px; text-align:right;")
        html.Div(
            style=(f"'position:absolute; right:0; top:0; bottom:0; width:12px; border:1px solid #888; "
                   f"background:linear-gradient(to top,' + {bar}.colors.join(',') + ')'",),
        )
        html.Div("0", v_if=(f"{bar}.signed",), classes="ca-colorbar-zero",
                 style="position:absolute; top:50%; right:16px; text-align:right;")
        html.Div(f"{{{{ {bar}.min.toPrecision(3) }}}} {{{{ {bar}.unit }}}}", classes="ca-colorbar-min",
                 style="position:absolute; bottom:0; right:16px; text-align:right;")


class ClinicalAIWebApp(TrameApp):
    """The page and its server-side state. Build with :func:`create_app`."""

    TOOLS = ("data", "segcorrect", "pet", "attribution", "editor", "display")

    def __init__(self, server=None, config: Optional[WebConfig] = None):
        super().__init__(server)
        # trame-slicer loads VTK and Slicer's libraries (seconds): when an app is made, not
        # when the module is imported (``clinicalai web --help``, the launcher)
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.app.logic import LayoutButtonLogic, SegmentEditorLogic
        from trame_slicer.core import SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        if config is None:
            raise ValueError("a WebConfig is required")
        self.config = config
        self.data_root = config.data
        #: the choice lists offered to the page, kept on the server (every panel checks with it)
        self.choices = security.OfferedChoices()
        #: tries each file in a child process before Slicer's readers see it (clinicalai.web.probe)
        self.prober = FileProber()
        self.server.enable_module(trame_slicer_module)
        self.server.enable_module(
            {"serve": {"clinicalai_web": str(Path(__file__).with_name("serve"))}, "scripts": ["clinicalai_web/upload.js", "clinicalai_web/ordered_triggers.js"],
             "styles": ["clinicalai_web/panels.css"]}
        )
        self.slicer_app = SlicerApp()
        self.context = MRMLContext.from_slicer_app(self.slicer_app)
        register_rca_factories(
            self.slicer_app.view_manager,
            self.server,
            slice_view_ui_f=_view_marker_ui,
            three_d_view_ui_f=_view_marker_ui,
            interactive_quality=STILL_QUALITY,
        )
        # views first: an effect pipeline made for a view that is still being built gets no
        # view (trame-slicer 2.0), and the segment editor adds its effects' nodes at once
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        register_side_by_side_layout(self.layout_logic.layout_manager)
        self.segment_editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.volume_node = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._edit_observer = None
        self._edited_node = None
        self._edit_count_pending = False
        self._undo_connected = False
        #: ``listener(segmentation_node)`` after the edited segmentation changed
        self.segmentation_listeners: List[Any] = []

        #: corner annotations and colour bars of the slice views (clinicalai.web.annotations)
        self.annotations = ViewAnnotations(self)
        self._settle_renders: List[asyncio.TimerHandle] = []
        self.panels: Dict[str, Any] = {}
        for cls in (DataPanel, SegCorrectPanel, PetPanel, AttributionPanel, DisplayPanel):
            panel = cls(self)
            self.panels[panel.key] = panel

        state = self.state
        state.trame__title = "ClinicalAI"
        state.ca_tool = "data"
        state.ca_drawer = True
        state.ca_volume_loaded = False
        state.ca_volume_name = ""
        state.ca_message = ""
        state.ca_error = ""
        #: the tool whose message ca_message / ca_error is: shown in that tool's drawer only
        state.ca_message_tool = "data"
        #: slice view tag -> the name of the map it shows ("" / absent: none)
        state.ca_view_labels = {}
        state.ca_edit_name = ""
        state.ca_edit_voxels = -1
        self.server.controller.on_server_ready.add(self._on_ready)
        self.state.change("ca_tool")(self._on_tool)
        self._on_tool(ca_tool=state.ca_tool)
        self._build_ui()

    # ------------------------------------------------------------------ life cycle
    def _on_ready(self, **_):
        self.loop = asyncio.get_event_loop()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.get_event_loop()
        return self.loop

    def _on_tool(self, ca_tool: str = "", **_: Any) -> None:
        """Left-button drag in a slice view adjusts window / level, as in Slicer (Slicer's
        window-level widget acts in the interaction node's AdjustWindowLevel mode only), except
        in the segment editor, where that drag paints / erases / cuts."""
        node = self.context.scene.GetFirstNodeByClass("vtkMRMLInteractionNode")
        if node is not None:
            node.SetCurrentInteractionMode(node.ViewTransform if ca_tool == "editor" else node.AdjustWindowLevel)

    # ------------------------------------------------------------------ messages
    def error(self, message: str, tool: str = "data") -> None:
        """An error shown in the drawer of ``tool`` only, until closed or replaced."""
        with self.state:
            self.state.ca_error = message
            self.state.ca_message = ""
            self.state.ca_message_tool = tool

    def info(self, message: str, tool: str = "data") -> None:
        """A message shown in the drawer of ``tool`` only, until closed or replaced."""
        with self.state:
            self.state.ca_message = message
            self.state.ca_error = ""
            self.state.ca_message_tool = tool

    # ------------------------------------------------------------------ scene
    def show_volume(self, node) -> None:
        """Make ``node`` the background of every slice view and the segment editor's master."""
        self.volume_node = node
        dm = self.slicer_app.display_manager
        dm.show_volume_in_slice_background(node)
        dm.show_volume_in_slice_foreground(None)
        # segmentations and label layers drawn on another image would float over this one
        hide_results_of_other_volumes(self.context.scene, node)
        show_results_of_volume(self.context.scene, node)  # its masks, hidden when another was shown
        dm.reset_views()
        with self.state:
            self.state.ca_volume_loaded = True
            self.state.ca_volume_name = node.GetName()
            self.state.ca_view_labels = {}  # no map is shown over the new volume
        for panel in self.panels.values():
            panel.on_volume_changed(node)

    #: seconds after :meth:`render_views` at which every view is rendered again (the last one
    #: because once, in a full test run on 2 loaded cores, the render at 2 s was not enough)
    SETTLE_RENDERS_S = (0.5, 2.0, 5.0)

    def render_views(self) -> None:
        """Re-render every view: the logics change slice composite / display nodes directly,
        which trame-slicer's views do not all observe.

        The views are rendered again a little later, when a burst of changes is over, so that
        they end on what the scene holds. (A view seen under load to keep its slice after a jump
        while its slider moved was not a render at all: the slider's earlier move reached the
        server after the jump and put the slice back; serve/ordered_triggers.js keeps that
        order now.) A new call replaces the settle renders still pending from an earlier one:
        its own come later, so the views still end on the scene, and a burst of changes costs
        three extra renders of each view, not three per change (each is about a core-second of
        server and browser time)."""
        self._render_all()
        for pending in self._settle_renders:
            pending.cancel()
        loop = self.event_loop()
        self._settle_renders = [loop.call_later(delay, self._render_all) for delay in self.SETTLE_RENDERS_S]

    def _render_all(self) -> None:
        self.annotations.schedule()
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()

    def edit_segmentation(self, segmentation_node, open_editor: bool = True) -> None:
        """Make ``segmentation_node`` the segment editor's segmentation over the current volume
        (and open the editor in the drawer)."""
        editor = self.slicer_app.segmentation_editor
        editor.deactivate_effect()
        editor.set_active_segmentation(segmentation_node, self.volume_node)
        self.segment_editor_logic._on_segment_editor_changed()
        self._observe_edits(segmentation_node)
        self._count_edit_voxels()
        if open_editor:
            with self.state:
                self.state.ca_tool = "editor"
                self.state.ca_drawer = True

    # the voxel count of the edited segmentation follows paint / erase / undo (~3 updates a second)
    def _observe_edits(self, node) -> None:
        import slicer

        if self._edit_observer is not None:
            obj, tag = self._edit_observer
            obj.RemoveObserver(tag)
        segmentation = node.GetSegmentation()
        tag = segmentation.AddObserver(slicer.vtkSegmentation.RepresentationModified, self._schedule_edit_count)
        self._edit_observer = (segmentation, tag)
        self._edited_node = node
        if not self._undo_connected:
            # undo / redo swap labelmaps without a RepresentationModified event
            for signal in self.slicer_app.segmentation_editor.undo_stack.signals():
                signal.connect(self._schedule_edit_count)
            self._undo_connected = True

    def _schedule_edit_count(self, *_) -> None:
        if self._edit_count_pending:
            return
        self._edit_count_pending = True
        self.event_loop().call_later(0.3, self._count_edit_voxels)

    def _count_edit_voxels(self) -> None:
        self._edit_count_pending = False
        node = self._edited_node
        if node is None or self.volume_node is None or self.context.scene.GetNodeByID(node.GetID()) is None:
            return
        try:
            labels = segmentation_to_labels(node, volume_grid_of_node(self.volume_node))
        except ClinicalAIError:
            return
        with self.state:
            self.state.ca_edit_name = node.GetName()
            self.state.ca_edit_voxels = int((labels.array > 0).sum())
        for listener in list(self.segmentation_listeners):
            listener(node)

    # ------------------------------------------------------------------ page
    def _tool_button(self, key: str, icon: str, name: str) -> None:
        from trame_slicer.app.ui import ControlButton

        ControlButton(
            id=f"tool-{key}",
            icon=icon,
            name=name,
            click=f"ca_drawer = !(ca_drawer && ca_tool === '{key}'); ca_tool = '{key}'",
            active=(f"ca_tool === '{key}' && ca_drawer",),
            classes="mt-1",
        )

    def _build_ui(self) -> None:
        from trame_slicer.app.ui import LayoutButton, SegmentEditorUI, SegmentEditorUndoRedoUI

        with viewer_layout(self.server, title="ClinicalAI") as layout:
            self.ui_layout = layout
            layout.title.set_text("ClinicalAI")
            with layout.appbar:
                html.Span(
                    "{{ ca_volume_name ? ca_volume_name : 'no volume open' }}",
                    id="volume-name",
                    classes="text-caption mx-4",
                )
                v3.VChip("synthetic demo models: not for clinical use", size="small", color="warning", classes="mx-2")
            layout.drawer.v_model = ("ca_drawer",)
            layout.drawer.width = 470
            with layout.drawer:
                with html.Div(classes="pa-2"):
                    v3.VAlert(
                        v_if="ca_error && ca_message_tool === ca_tool",
                        text=("ca_error",),
                        type="error",
                        density="compact",
                        closable=True,
                        id="error-alert",
                        classes="mb-2",
                        click_close="ca_error = ''",
                    )
                    v3.VAlert(
                        v_if="ca_message && ca_message_tool === ca_tool",
                        text=("ca_message",),
                        type="info",
                        density="compact",
                        closable=True,
                        click_close="ca_message = ''",
                        id="info-alert",
                        classes="mb-2",
                    )
                for key, panel in self.panels.items():
                    with html.Div(v_show=f"ca_tool === '{key}'", id=f"panel-{key}"):
                        panel.build_ui()
                with html.Div(v_show="ca_tool === 'editor'", id="panel-editor", style="height: 85vh;"):
                    html.Div(
                        "{{ ca_edit_name }}: {{ ca_edit_voxels }} voxels",
                        v_if="ca_edit_voxels >= 0",
                        id="editor-voxels",
                        classes="text-body-2 px-4",
                    )
                    self.segment_editor_ui = SegmentEditorUI()
                self.segment_editor_logic.set_ui(self.segment_editor_ui)
            with layout.toolbar:
                self._tool_button("data", "mdi-folder-open", "Open data")
                self._tool_button("segcorrect", "mdi-heart-pulse", "SegCorrect")
                self._tool_button("pet", "mdi-brain", "PetRecurrence")
                self._tool_button("attribution", "mdi-map-search", "AttributionViewer")
                self._tool_button("editor", "mdi-brush", "Segment editor")
                self._tool_button("display", "mdi-tune-variant", "Window/level and 3D")
                self.layout_button = LayoutButton(classes="mt-1")
                self.layout_logic.set_ui(self.layout_button)
            with layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.segment_editor_ui)
            with layout.content:
                self.layout_logic.layout_manager.initialize_layout_grid(layout)


def limit_websocket_messages(server) -> None:
    """Cap what one websocket message from a page may make the server allocate.

    aiohttp's per-frame limit comes from trame's ``ws_max_msg_size`` option. wslink's
    re-assembly of chunked messages (``UnChunker``) allocates the total size a chunk header
    *declares*, and after the hand-shake wslink raises its limit to a hard-coded 4 GiB with no
    setting to change it; so its class is replaced by a subclass keeping the app's limit and
    a few pending messages per connection. A message over it closes that connection only.
    """
    import wslink.protocol
    from wslink.chunking import HEADER_LENGTH, UnChunker, _decode_header

    limit = security.WS_MAX_MESSAGE_BYTES
    server.options["ws_max_msg_size"] = limit

    class BoundedUnChunker(UnChunker):
        MAX_PENDING = 4

        def set_max_message_size(self, size: int) -> None:
            super().set_max_message_size(min(int(size), limit))

        def process_chunk(self, chunk: bytes):
            message_id, _offset, _total = _decode_header(chunk[:HEADER_LENGTH])
            if message_id not in self.pending_messages and len(self.pending_messages) >= self.MAX_PENDING:
                raise ValueError(f"more than {self.MAX_PENDING} unfinished messages on one connection")
            return super().process_chunk(chunk)

    if not getattr(wslink.protocol.UnChunker, "clinicalai_bounded", False):
        BoundedUnChunker.clinicalai_bounded = True
        wslink.protocol.UnChunker = BoundedUnChunker


def create_app(config: WebConfig, server=None) -> ClinicalAIWebApp:
    """The app on ``server`` (a new trame server by default) with the HTTP guard installed."""
    from trame.app import get_server

    server = server or get_server("clinicalai", client_type="vue3")
    limit_websocket_messages(server)
    app = ClinicalAIWebApp(server, config)
    http_config = web_http.HttpConfig(
        data=config.data,
        host=config.host,
        port=config.port,
        token=config.token,
        max_upload_bytes=security.max_upload_bytes(config.max_upload_mb),
        on_upload=app.panels["data"].on_uploaded,
        quota_bytes=None if config.quota_gb is None else security.quota_bytes(config.quota_gb),
        probe=app.prober.check,
    )

    def bind(wslink_server):
        web_http.install(wslink_server.app, http_config)

    server.controller.on_server_bind.add(bind)
    return app


def serve(config: WebConfig) -> None:
    """Check the binding, build the app and serve until interrupted (blocking)."""
    import sys

    security.check_bind(config.host, config.token)
    # trame parses sys.argv for its own options (--host, --port, ...): ours are already parsed
    sys.argv = sys.argv[:1]
    app = create_app(config)
    url_host = config.host if ":" not in config.host else f"[{config.host}]"
    url = f"http://{url_host}:{config.port}/"
    if config.token:
        url += f"?token={config.token}"

    def announce(**_):
        print(f"ClinicalAI web: serving {config.data.root} at {url}", flush=True)

    app.server.controller.on_server_ready.add(announce)
    app.server.start(
        host=config.host,
        port=config.port,
        open_browser=False,
        show_connection_info=False,
        timeout=config.idle_timeout_s,
    )

"""Small pieces the workflow panels share: model / device / node choices, tables, saving."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...errors import ClinicalAIError
from ...labels import label
from ...mrml.display import show_volume_rendering
from ...mrml.masks import mask_chooser_note, masks_for_image
from ...mrml.model_choices import bundled_models, describe_model, device_choices, model_title
from ...mrml.scene import RASPoint, jump_to_mask, mask_from_node, nodes_of_class
from ...mrml.volumes import MODALITY_ATTRIBUTE, volume_grid_of_node
from .. import security


def model_choices(task: Optional[str], default: Optional[str] = None, modality: Optional[str] = None) -> List[Dict[str, Any]]:
    """``[{"title", "value"}]`` of the models of ``task`` known by name, bundled and the server
    user's imported ones (value = card path or bundle folder), the model named ``default`` first;
    with the image's ``modality`` those made for another come last, marked (e.g. "(PT model)")."""
    try:
        return [{"title": model_title(m, with_source=True), "value": m["path"]}
                for m in bundled_models(task, default, modality=modality)]
    except ClinicalAIError:
        return []


def node_modality(node: Any) -> Optional[str]:
    """The modality (DICOM code) the reader stored on a volume node; ``None`` when unknown
    (a NIfTI says none) or without a node."""
    return (node.GetAttribute(MODALITY_ATTRIBUTE) or None) if node is not None else None


def device_items() -> List[Dict[str, Any]]:
    """``[{"title", "value"}]`` of the device selector (auto, cuda when there is one, cpu)."""
    try:
        return [{"title": d["label"], "value": d["value"]} for d in device_choices()]
    except Exception:  # no torch device query possible: CPU only
        return [{"title": "CPU", "value": "cpu"}]


def card_line(path: str) -> str:
    """One line of plain text about the card of the model at ``path`` (task, classes /
    labels, the synthetic-demo warning); the card's error when it cannot be read."""
    if not path:
        return ""
    try:
        card = describe_model(path)
    except ClinicalAIError as exc:
        return str(exc)
    what = ", ".join(card["labels"] or card["classes"])
    text = f"{card['name']} {card['version']}: {card['task']}" + (f" ({what})" if what else "")
    if card["warning"]:
        text += f". {card['warning']}"
    return text


def warning_alerts(warnings_key: str, element_id: str) -> None:
    """A run's warnings about its input (reader, e.g. DICOM slice-position jitter; model fit,
    e.g. a CT given to a model made for MR) as one warning alert each: the same look in every
    panel. Text interpolation, never HTML: warnings quote file and model names."""
    with html.Div(id=element_id):
        v3.VAlert(v_for=f"w in {warnings_key}", text=("w",), type="warning", density="compact", classes="my-1")


def segmentation_items(scene: Any) -> List[Dict[str, Any]]:
    items = [{"title": "(none)", "value": ""}]
    for node in nodes_of_class(scene, "vtkMRMLSegmentationNode"):
        if node.GetHideFromEditors():
            continue
        items.append({"title": node.GetName(), "value": node.GetID()})
    return items


def mask_items(scene: Any, image_node: Any) -> Tuple[List[Dict[str, Any]], str]:
    """``([{"title", "value"}], note)``: the brain-mask / reference-lesion chooser's entries, the
    label maps and segmentations of the image on show only (a mask of another patient is never
    offered), and a line saying why no more; the "(none)" entry says it too when it is alone."""
    offered, others = masks_for_image(scene, image_node)
    note = mask_chooser_note(image_node, offered, others)
    items = [{"title": "(none)" if offered else f"(none: {note})", "value": ""}]
    for node in offered:
        what = "label map" if node.IsA("vtkMRMLLabelMapVolumeNode") else "segmentation"
        items.append({"title": f"{node.GetName()} ({what})", "value": node.GetID()})
    return items, note


def table(rows_key: str, columns: Sequence[str], table_id: str, row_click=None, actions=None, headers=None) -> None:
    """A dense HTML table of the state list ``rows_key`` (dicts) with ``columns`` (shown as
    ``headers``, default the keys' labels, :func:`clinicalai.labels.label`)."""
    headers = headers or [label(c) for c in columns]
    with v3.VTable(density="compact", id=table_id, fixed_header=True, height="280px", classes="text-caption ca-table"):
        with html.Thead():
            with html.Tr():
                for c, h in zip(columns, headers or columns):
                    html.Th(h, classes="px-1")
                if actions:
                    html.Th("")
        with html.Tbody():
            with html.Tr(
                v_for=f"(row, i) in {rows_key}",
                key="i",
                classes=("`ca-row ca-row-${i}`",),
                **({"click": (row_click, "[i]")} if row_click else {}),
            ):
                for c in columns:
                    html.Td(f"{{{{ row['{c}'] }}}}", classes="px-1")
                if actions:
                    with html.Td(classes="px-0 text-no-wrap"):
                        actions()


def dynamic_table(rows_key: str, columns_key: str, table_id: str, actions=None, current: str = "",
                  actions_width: int = 96, titles_key: str = "") -> None:
    """Like :func:`table`, the columns being the state list ``columns_key`` (the logic's own
    table columns, whatever they are). The actions come first and a long cell is cut (its
    text on hover), so the buttons stay inside the drawer however wide the columns are; ``current`` (a JavaScript
    expression of ``row``) marks the rows it is true of (``ca-row-current``, highlighted);
    ``actions_width``: pixels of the actions' column; ``titles_key``: a state dict column ->
    header (:func:`column_titles`), default the column keys."""
    row_class = f"`ca-row ca-row-${{i}}` + (({current}) ? ' ca-row-current' : '')" if current else "`ca-row ca-row-${i}`"
    # a fixed layout (serve/panels.css): the columns share the panel's width, the actions'
    # column keeps its own
    with v3.VTable(density="compact", id=table_id, fixed_header=True, height="280px", classes="text-caption ca-table ca-table-fit"):
        with html.Thead():
            with html.Tr():
                if actions:
                    html.Th("", style=f"width: {actions_width}px;")
                html.Th(f"{{{{ ({titles_key} || {{}})[c] || c }}}}" if titles_key else "{{ c }}", v_for=f"c in {columns_key}", key="c",
                        classes="px-1", title=("c",),
                        style="white-space: normal; overflow-wrap: anywhere;")
        with html.Tbody():
            with html.Tr(v_for=f"(row, i) in {rows_key}", key="i", classes=(row_class,)):
                if actions:
                    with html.Td(classes="px-0 text-no-wrap"):
                        actions()
                # one line per row, a long cell cut with its whole text on hover
                html.Td("{{ row[c] }}", v_for=f"c in {columns_key}", key="c", classes="px-1", title=("row[c]",),
                        style="overflow: hidden; text-overflow: ellipsis; white-space: nowrap;")


def column_titles(columns: Sequence[str]) -> Dict[str, str]:
    """``{column: header}`` of a :func:`dynamic_table` (:func:`clinicalai.labels.label`)."""
    return {c: label(c) for c in columns}


def fmt(value: Any) -> Any:
    """Table cell text: numbers rounded, booleans as yes/no."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.3f}"
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def result_stem(node_name: str, what: str) -> str:
    """A file name stem for a result: input name + what + time (never overwrites a result)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{node_name}_{what}").strip("_") or "result"
    return f"{safe}_{time.strftime('%Y%m%d-%H%M%S')}"


def results_folder(app: Any) -> Path:
    """``<data>/results``; refused when the quota of uploads + results is used up."""
    quota = app.config.quota_gb
    security.check_quota(app.data_root, None if quota is None else security.quota_bytes(quota), 1, "saving the results")
    return app.data_root.folder(security.RESULTS_DIR)


def saved_links(paths: Sequence[Path], app: Any) -> List[Dict[str, str]]:
    """``[{"name", "url"}]`` download links of saved result files."""
    from urllib.parse import quote

    out = []
    for p in paths:
        rel = app.data_root.relative(p)
        out.append({"name": rel, "url": f"api/download?path={quote(rel)}"})
    return out


def saved_list(key: str, list_id: str) -> None:
    with html.Div(id=list_id, classes="text-caption mt-1"):
        with html.Div(v_for=f"f in {key}", key="f.url"):
            html.A("{{ f.name }}", href=("f.url",), download=True, target="_blank")


def show_in_3d(app: Any, node: Any, visible: bool) -> None:
    """Volume rendering of ``node`` in the 3D view on or off (:func:`clinicalai.mrml.display.show_volume_rendering`:
    made on first use, transfer functions from the node's intensities); the 3D camera is fitted
    to what is shown, so a volume far from the origin is in view."""
    if node is None:
        return
    show_volume_rendering(app.slicer_app.volume_rendering, node, visible)
    if visible:
        for view in app.slicer_app.view_manager.get_threed_views():
            view.fit_view_to_content()
    app.render_views()


def slider(label: str, key: str, lo: float, hi: float, step: float, element_id: str, digits: int = 2) -> None:
    """A compact full-width slider (in the element ``element_id``) with its value written beside
    it (``element_id-value``): a bare slider gave no number."""
    with html.Div(classes="d-flex align-center"):
        with html.Div(classes="flex-grow-1", id=element_id):
            v3.VSlider(label=label, v_model=(key,), min=lo, max=hi, step=step, hide_details=True, density="compact")
        html.Span(f"{{{{ Number({key}).toFixed({digits}) }}}}", id=f"{element_id}-value", classes="text-body-2 ml-2")


def jump_to_segmentation(app: Any, node_id: str, what: str = "segmentation") -> RASPoint:
    """Centre every slice view on the segmentation or label map ``node_id`` (e.g. a lesion VOI).

    The point is the mask voxel nearest to the mask's centre of mass (a curved mask's centre
    can lie outside it), in RAS millimetres; returned as ``(r, a, s)``. Raises
    :class:`ClinicalAIError` when there is no such node, no volume open or the mask is empty
    on the open volume's grid.
    """
    node = app.context.scene.GetNodeByID(node_id) if node_id else None
    if node is None:
        raise ClinicalAIError(f"choose a {what} first")
    if app.volume_node is None:
        raise ClinicalAIError("open a volume first")
    grid = volume_grid_of_node(app.volume_node)
    mask = mask_from_node(app.context.scene, node_id, grid, what)  # raises when it is empty on the grid
    point = jump_to_mask(app.context.scene, grid, mask.array)
    app.render_views()
    return point

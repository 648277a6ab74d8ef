"""The desktop panels' model, device and mask choosers (``QComboBox`` + ``ctkPathLineEdit``;
``qMRMLNodeComboBox``) and the HTML they put in their labels. The Qt widgets are duck-typed (``addItem``, ``findData``,
``findText``, ``currentIndex``, ``currentText``, ``currentData``; ``currentPath``), so a
plain object stands in for them in the tests."""

from __future__ import annotations

import html
from typing import Any, Dict, Iterable, List, Optional

from ..mrml import masks, model_choices

#: the model chooser's last entry: the model comes from the file chooser beside it
MODEL_FILE_ITEM = "Model file below..."


def fill_model_combo(combo: Any, task: Optional[str], default: Optional[str] = None) -> None:
    """The models of ``task`` known by name (the model named ``default`` first, the path as
    item data), then :data:`MODEL_FILE_ITEM`."""
    for entry in model_choices.bundled_models(task, default):
        combo.addItem(model_choices.model_title(entry), entry["path"])
    combo.addItem(MODEL_FILE_ITEM, "")


def combo_model_path(combo: Any, path_edit: Any) -> str:
    """The model a chooser filled by :func:`fill_model_combo` stands for: the chosen entry's
    path, or the file chooser's (a bundle's ``configs/metadata.json`` = its folder); ``""``
    when the file entry has no file yet."""
    if combo.currentText == MODEL_FILE_ITEM:
        return model_choices.model_path_from_choice(path_edit.currentPath) if path_edit.currentPath else ""
    return combo.currentData or ""


def select_model_choice(combo: Any, path_edit: Any, path: str) -> None:
    """Put a panel's model chooser back on ``path`` (a bundled model's entry, or the file entry
    with ``path`` in the file chooser ``path_edit``); ``""`` leaves the default, already first.

    ``combo`` is a ``QComboBox`` filled by :func:`fill_model_combo`, ``path_edit`` a
    ``ctkPathLineEdit``.
    """
    if not path:
        return
    index = combo.findData(path)
    if index < 0:
        index = combo.findText(MODEL_FILE_ITEM)
        path_edit.currentPath = path
    combo.currentIndex = index


def fill_device_combo(combo: Any) -> None:
    """The device selector's entries (auto, cuda when there is one, cpu), the value as item data."""
    for entry in model_choices.device_choices():
        combo.addItem(entry["label"], entry["value"])


def select_data(combo: Any, value: Any) -> None:
    """Choose the entry whose item data is ``value``; left as it is when there is none."""
    index = combo.findData(value)
    if index >= 0:
        combo.currentIndex = index


def restrict_mask_selector(selector: Any, scene: Any, image_node: Any) -> str:
    """Make a brain-mask / reference-lesion ``qMRMLNodeComboBox`` (label maps and segmentations)
    offer the masks of ``image_node`` only (:func:`clinicalai.mrml.masks.masks_for_image`): the
    others are hidden through its proxy model's ``hiddenNodeIDs``, a hidden current choice is
    dropped, and the "None" entry says why nothing is offered. Returns the chooser's note."""
    offered, others = masks.masks_for_image(scene, image_node)
    note = masks.mask_chooser_note(image_node, offered, others)
    selector.sortFilterProxyModel().hiddenNodeIDs = [node.GetID() for node in others]
    selector.noneDisplay = "None" if offered else f"None ({note})"
    current = selector.currentNode()
    if current is not None and current.GetID() not in {node.GetID() for node in offered}:
        selector.setCurrentNode(None)
    return note


def card_html(summary: Dict[str, Any]) -> str:
    """A model card summary (:func:`clinicalai.mrml.model_choices.card_summary`) as a few lines
    of HTML for a panel label (the synthetic-demo warning first, in red; everything escaped)."""
    lines = []
    if summary.get("warning"):
        lines.append(f"<b style='color:#c00'>{html.escape(summary['warning'])}</b>")
    lines.append(f"<b>{html.escape(summary['name'])}</b> {html.escape(summary.get('version', ''))} &mdash; {html.escape(summary['task'])}")
    if summary.get("labels"):
        lines.append("Labels: " + html.escape(", ".join(summary["labels"])))
    if summary.get("classes"):
        lines.append("Classes: " + html.escape(", ".join(summary["classes"])))
    if summary.get("intended_use"):
        lines.append("Intended use: " + html.escape(summary["intended_use"]))
    return "<br>".join(lines)


def error_html(error: BaseException) -> str:
    """A chooser's error (a bad card while browsing) as one red, escaped HTML line."""
    return f"<span style='color:#c00'>{html.escape(str(error))}</span>"


def warning_lines(warnings: Optional[Iterable[Any]]) -> List[str]:
    """A run's warnings about its input (reader, model fit) as red HTML lines for a panel
    label, one per warning, escaped (they quote file and model names)."""
    return [f"<span style='color:#c00'>&#9888; {html.escape(str(w))}</span>" for w in (warnings or [])]

"""What the three desktop Slicer panels (the ``SegCorrect/``, ``PetRecurrence/`` and
``AttributionViewer/`` module folders) share above :mod:`clinicalai.mrml`: the Apply / Cancel /
progress cycle with the trust question (:mod:`.panel_runner`), the parameter-node half of the
scripted-module widget (:mod:`.panel_widget`) and the Qt choosers' helpers (:mod:`.choosers`).

Desktop only: the browser app and the command line never import this package. Qt objects
(timers, combo boxes, path edits, labels) are passed in by the module folders, so this code
is tested on slicer-core with stand-ins.
"""

from .choosers import (
    MODEL_FILE_ITEM,
    card_html,
    combo_model_path,
    error_html,
    fill_device_combo,
    fill_model_combo,
    restrict_mask_selector,
    select_data,
    select_model_choice,
    warning_lines,
)
from .panel_runner import PanelRunner, error_report, trust_question
from .panel_widget import PanelWidgetMixin

__all__ = [
    "MODEL_FILE_ITEM",
    "PanelRunner",
    "PanelWidgetMixin",
    "card_html",
    "combo_model_path",
    "error_html",
    "error_report",
    "fill_device_combo",
    "fill_model_combo",
    "restrict_mask_selector",
    "select_data",
    "select_model_choice",
    "trust_question",
    "warning_lines",
]

"""The structures SegCorrect segments: cardiac label names, values and colours, defined once.

The cardiac table follows the ACDC convention (0 background, 1 RV, 2 MYO, 3 LV). The
engine's checks and messages, the model cards it writes, and the cardiac phantoms
(:mod:`clinicalai.phantoms.cardiac`) all read it from here, so inference never depends on the
phantom generator for a fact about anatomy.

Label entries are plain dicts ``{"name", "value", "color"[, "description"]}`` (colour RGB in
0..1), the shape of a model card's ``labels`` and of ``Volume.metadata["segments"]``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

#: Label values of the ACDC convention; the single source of names, values and colours.
#: Colours are 3D Slicer's GenericAnatomyColors for label values 1, 2, 3 (what Slicer shows
#: for a label map with these values), RGB in 0..1.
CARDIAC_LABELS: List[Dict[str, Any]] = [
    {"name": "RV", "value": 1, "color": (128 / 255, 174 / 255, 128 / 255), "description": "right ventricle blood pool"},
    {"name": "MYO", "value": 2, "color": (241 / 255, 214 / 255, 145 / 255), "description": "left ventricular myocardium"},
    {"name": "LV", "value": 3, "color": (177 / 255, 122 / 255, 101 / 255), "description": "left ventricle blood pool"},
]
BACKGROUND = 0
#: name -> value of each structure (ACDC): the keys the anatomical gate judges
CARDIAC_VALUES: Dict[str, int] = {str(lab["name"]): int(lab["value"]) for lab in CARDIAC_LABELS}
RV, MYO, LV = CARDIAC_VALUES["RV"], CARDIAC_VALUES["MYO"], CARDIAC_VALUES["LV"]
#: structure names in value order, as a cardiac model card lists them
CARDIAC_NAMES: Tuple[str, ...] = tuple(CARDIAC_VALUES)
#: value -> name (metric tables are keyed by structure name)
CARDIAC_NAME_OF: Dict[int, str] = {v: n for n, v in CARDIAC_VALUES.items()}
N_CLASSES = 1 + len(CARDIAC_LABELS)  # background + 3 structures

#: colour of a segment whose card gives none (grey, so it is visible yet clearly unassigned)
UNSET_COLOR: Tuple[float, float, float] = (0.5, 0.5, 0.5)


def cardiac_segments() -> List[Dict[str, Any]]:
    """``CARDIAC_LABELS`` as ``Volume.metadata["segments"]`` entries (name, value, color)."""
    return [{"name": lab["name"], "value": lab["value"], "color": tuple(lab["color"])} for lab in CARDIAC_LABELS]


def card_labels(labels: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Label entries -> a model card's ``labels`` list (JSON: colour as a list, no description).

    An entry without a colour keeps none (the card then leaves it to the viewer).
    """
    return [{"name": lab["name"], "value": int(lab["value"]),
             **({"color": list(lab["color"])} if lab.get("color") is not None else {})} for lab in labels]


def cardiac_mask_hint() -> str:
    """``"0 background, 1 RV, 2 MYO, 3 LV"``: what a cardiac label mask holds, for messages."""
    return ", ".join([f"{BACKGROUND} background"] + [f"{v} {n}" for n, v in CARDIAC_VALUES.items()])


__all__ = [
    "BACKGROUND", "CARDIAC_LABELS", "CARDIAC_NAMES", "CARDIAC_NAME_OF", "CARDIAC_VALUES", "LV", "MYO", "N_CLASSES",
    "RV", "UNSET_COLOR", "card_labels", "cardiac_mask_hint", "cardiac_segments",
]

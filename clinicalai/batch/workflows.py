"""What ``batch`` needs to know of each single-case command.

A batch case runs the single-case command's own function (``_run_segment``, ``_run_pet``,
...) on an ``argparse.Namespace`` built as its parser would build it, with the output paths
pointed into the case's temporary folder, so every case writes exactly what the single-case
command writes. This module says, per workflow, which options are per case (CSV columns),
which are outputs (fixed file names in the case folder) and which figures of the written JSON
go into the summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..pet.suv import UNITS
from ..segcorrect.validity import label_dice
from ..volume import read_volume
from .inputs import Case, column

Figures = Dict[str, Any]


@dataclass(frozen=True)
class Workflow:
    """One single-case command as a batch workflow.

    ``input_dest``: its positional argument (the case's image). ``outputs``: option dest ->
    file name in the case folder, always written (the JSON among them is ``report``, where the
    summary's figures come from). ``optional_outputs``: the same, written when the batch
    command gets the flag of that option. ``exclude``: dests that are not batch options
    (outputs, per-case files). ``columns``: the summary's headline columns. ``imports``: the
    modules its function imports on its first call (imported by every worker before the first
    case, so that no case pays them; ``monai`` alone takes seconds).
    """

    name: str
    input_dest: str
    outputs: Dict[str, str]
    report: str
    columns: Tuple[str, ...]
    case_args: Callable[[Case, Dict[str, Any]], Dict[str, Any]]
    figures: Callable[[Dict[str, Any], Case, Path], Figures]
    optional_outputs: Dict[str, str] = field(default_factory=dict)
    exclude: Tuple[str, ...] = ()
    imports: Tuple[str, ...] = ()

    def excluded(self) -> Tuple[str, ...]:
        """Dests of the single-case parser that the batch parser does not copy."""
        return (self.input_dest, *self.outputs, *self.optional_outputs, *self.exclude)

    def expected_files(self, wanted: Dict[str, bool]) -> List[str]:
        """File names a complete case folder holds (``wanted``: optional output dest -> flag)."""
        return list(self.outputs.values()) + [f for d, f in self.optional_outputs.items() if wanted.get(d)]


# ---------------------------------------------------------------------------- per-case arguments
def _paths(case: Case, mapping: Dict[str, str]) -> Dict[str, Any]:
    """Option dest -> the case's value of each CSV column in ``mapping`` (column -> dest) it has."""
    return {dest: column(case, col) for col, dest in mapping.items() if column(case, col) is not None}


def _segment_args(case: Case, options: Dict[str, Any]) -> Dict[str, Any]:
    return {"image": case.input}


def _correct_args(case: Case, options: Dict[str, Any]) -> Dict[str, Any]:
    # a CSV with a 'mask' column pairs each image ('path') with the mask to correct; otherwise
    # (a folder of masks, or a CSV of masks with an optional 'image' column) the input is the mask
    if column(case, "mask"):
        return {"mask": column(case, "mask"), "image": case.input}
    return {"mask": case.input, "image": column(case, "image")}


def _number(case: Case, key: str, scale: float = 1.0) -> Optional[float]:
    value = column(case, key)
    if value is None:
        return None
    try:
        return float(value) * scale
    except ValueError:
        raise InputError(f"column '{key}' is not a number: {value!r}") from None


def _pet_args(case: Case, options: Dict[str, Any]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"image": case.input, "brain_mask": column(case, "brain_mask"), "lesion": column(case, "lesion")}
    if column(case, "units"):
        units = column(case, "units").lower()
        if units not in UNITS:
            raise InputError(f"column 'units' must be suv or bqml, not {units!r}")
        args["units"] = units
    # the columns 'clinicalai synth pet' writes (and 'train pet' reads): dose in Bq, the option in MBq
    for col, dest, scale in (("weight_kg", "weight", 1.0), ("dose_bq", "dose", 1e-6)):
        value = _number(case, col, scale)
        if value is not None:
            args[dest] = value
    args.update(_paths(case, {"injection_time": "injection_time", "scan_time": "scan_time"}))
    if column(case, "static_window"):  # a dynamic PET: its window, over --static-window
        from ..pet.dynamic import parse_static_window

        args["static_window"] = list(parse_static_window(column(case, "static_window")))
    return args


def _lesion_args(case: Case, options: Dict[str, Any]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"image": Path(case.input), "lesion": None, "brain_mask": None}
    args.update({k: Path(v) for k, v in _paths(case, {"lesion": "lesion", "brain_mask": "brain_mask"}).items()})
    return args


def _explain_args(case: Case, options: Dict[str, Any]) -> Dict[str, Any]:
    args = _lesion_args(case, options)
    if column(case, "target"):
        args["target"] = column(case, "target")
    return args


# ---------------------------------------------------------------------------- headline figures
def _round(value: Any, digits: int = 4) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _reference_dice(case: Case, folder: Path) -> Optional[float]:
    """Mean label Dice of the case's mask against the CSV's ``reference`` mask, if any."""
    ref = column(case, "reference")
    if ref is None:
        return None
    mask, reference = read_volume(folder / "mask.nii.gz"), read_volume(ref)
    if mask.array.shape != reference.array.shape:
        raise InputError(f"the reference mask {Path(ref).name} is not on the image's grid")
    a, b = mask.array.astype(int), reference.array.astype(int)
    values = sorted(int(v) for v in set(np.unique(a)) | set(np.unique(b)) if v)
    return label_dice(a, b, values)


def _segcorrect_figures(report: Dict[str, Any], case: Case, folder: Path) -> Figures:
    correction = report.get("correction", report)  # 'segment' nests it; 'correct' is the correction
    summary = (correction or {}).get("summary") or {}
    out = {k: summary.get(k) for k in ("slices", "valid_raw", "valid_final", "corrected")}
    out["validity_final"] = _round(summary.get("validity_rate_final"))
    out["dice_reference"] = _round(_reference_dice(case, folder))
    return out


def _pet_figures(report: Dict[str, Any], case: Case, folder: Path) -> Figures:
    static = report.get("static") or {}
    return {"probability": report.get("probability_recurrence"), "predicted": report.get("label"),
            "spread": report.get("spread"), "SUVmax": static.get("SUVmax"), "TBRmax": static.get("TBRmax"),
            "label": column(case, "label")}


def _scores(scores: Optional[Dict[str, Any]]) -> Figures:
    scores = scores or {}
    return {"dice": _round(scores.get("dice")), "auroc": _round(scores.get("auroc"))}


def _explain_figures(report: Dict[str, Any], case: Case, folder: Path) -> Figures:
    prediction = report.get("prediction") or {}
    probs = prediction.get("probabilities") or []
    classes = prediction.get("classes") or []
    best = max(range(len(probs)), key=lambda i: probs[i]) if probs else None
    return {"predicted": classes[best] if best is not None and best < len(classes) else None,
            "probability": _round(probs[best]) if best is not None else None,
            "target": report.get("target_name"), **_scores(report.get("scores"))}


def _anomaly_figures(report: Dict[str, Any], case: Case, folder: Path) -> Figures:
    return {"score": _round(report.get("score"), 6), "score_name": report.get("score_name"),
            **_scores(report.get("lesion_scores"))}


#: what every workflow imports to build its networks (model cards name monai.networks.nets.*)
NETWORKS = ("monai.networks.nets", "clinicalai.networks")
SEGCORRECT_IMPORTS = ("clinicalai.segcorrect.pipeline", "clinicalai.volume", *NETWORKS)
SEGCORRECT_COLUMNS = ("slices", "valid_raw", "valid_final", "corrected", "validity_final", "dice_reference")

WORKFLOWS: Dict[str, Workflow] = {
    "segment": Workflow(
        "segment", "image", {"output": "mask.nii.gz", "report": "report.json"}, "report.json", SEGCORRECT_COLUMNS,
        _segment_args, _segcorrect_figures, optional_outputs={"raw_output": "raw.nii.gz"}, imports=SEGCORRECT_IMPORTS),
    "correct": Workflow(
        "correct", "mask", {"output": "mask.nii.gz", "report": "report.json"}, "report.json", SEGCORRECT_COLUMNS,
        _correct_args, _segcorrect_figures, optional_outputs={"raw_output": "raw.nii.gz"}, exclude=("image",),
        imports=SEGCORRECT_IMPORTS),
    "pet": Workflow(
        "pet", "image", {"json": "pet.json"}, "pet.json",
        ("probability", "predicted", "spread", "SUVmax", "TBRmax", "label"),
        _pet_args, _pet_figures, optional_outputs={"cam": "cam.nii.gz", "voi_out": "voi.seg.nrrd"},
        exclude=("brain_mask", "lesion"), imports=("clinicalai.pet.workflow", "clinicalai.volume", *NETWORKS)),
    "explain": Workflow(
        "explain", "image", {"out": "map.nii.gz", "json": "explain.json"}, "explain.json",
        ("predicted", "probability", "target", "dice", "auroc"),
        _explain_args, _explain_figures, exclude=("lesion", "brain_mask"),
        imports=("clinicalai.attribution.core", "clinicalai.attribution.metrics", "clinicalai.volume", *NETWORKS)),
    "anomaly": Workflow(
        "anomaly", "image", {"output": "map.nii.gz", "json": "anomaly.json"}, "anomaly.json",
        ("score", "score_name", "dice", "auroc"),
        _lesion_args, _anomaly_figures,
        optional_outputs={"reconstruction": "reconstruction.nii.gz"}, exclude=("lesion", "brain_mask"),
        imports=("clinicalai.generative.anomaly", "clinicalai.volume", *NETWORKS)),
}


def read_report(folder: Path, workflow: Workflow) -> Dict[str, Any]:
    """The JSON the single-case command wrote into ``folder``."""
    with open(folder / workflow.report) as f:
        return json.load(f)

"""The whole SegCorrect workflow (segmenter, then the gated correction) on a phantom family.

``clinicalai evaluate segcorrect`` scores correctors on synthetic corruptions of true masks;
this scores what a user gets: the segmenter's own output on images, before and after
correction, on the training family (:mod:`clinicalai.phantoms.cardiac`) or on the held-out
family (:mod:`clinicalai.phantoms.cardiac_heldout`, never trained on). Per volume and
structure: Dice, HD95, ASSD (MONAI metrics, :func:`.evaluate.volume_metrics`); per slice:
anatomical validity (:func:`.validity.check_slice`).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..casemap import CaseMapper, serial_map
from ..errors import InputError
from ..phantoms.cardiac import cardiac_case
from ..phantoms.cardiac_heldout import heldout_cardiac_case
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from . import FAMILIES
from .evaluate import _summarise, volume_metrics
from .labels import CARDIAC_NAMES
from .pipeline import keep_largest_for_run, run_segcorrect
from .validity import check_slice



def family_case(family: str, seed: int, max_rotation_deg: float = 180.0):
    """One cardiac case of ``family`` (a :class:`~clinicalai.phantoms.cardiac.CardiacCase`)."""
    if family == "training":
        return cardiac_case(seed)
    if family == "heldout":
        return heldout_cardiac_case(seed, max_rotation_deg=max_rotation_deg)
    raise InputError(f"phantom family must be one of {', '.join(FAMILIES)}, got {family!r}")


def evaluate_segmenter(
    segmenter,
    corrector=None,
    *,
    family: str = "heldout",
    n_cases: int = 10,
    seed: int = 0,
    max_rotation_deg: float = 180.0,
    strategy: str = "gate",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    map_cases: CaseMapper = serial_map,
    context_corrector: Optional[Any] = None,
    keep_largest: Optional[bool] = None,
) -> Dict[str, Any]:
    """Score ``segmenter`` (and the gated ``corrector``, when given) on ``n_cases`` phantoms;
    ``map_cases`` runs the cases (default: one after the other here; ``clinicalai.batch``
    gives one for Dask workers, same results); ``context_corrector``: with
    ``strategy="evidence"``, the context NVAE as one more candidate source; ``keep_largest``:
    the largest-component step on the raw mask (``None``: as the segmenter's card says).

    Returns ``{"data": ..., "raw": summary, "final": summary (with a corrector),
    "per_case": [...], "seconds": s}``; a summary holds mean Dice / HD95 / ASSD per structure
    and ``validity_rate`` (share of slices with any label that pass every criterion).
    """
    if n_cases < 1:
        raise InputError("evaluate needs at least one case")
    t0 = time.perf_counter()
    modes = ("raw", "final") if corrector is not None else ("raw",)
    vols: Dict[str, List[Dict[str, Dict[str, float]]]] = {m: [] for m in modes}
    valid: Dict[str, List[bool]] = {m: [] for m in modes}
    per_case: List[Dict[str, Any]] = []

    def done(i: int) -> None:
        check_cancel(cancel)
        report(progress, i / n_cases, f"case {i}/{n_cases}")

    check_cancel(cancel)
    keep = keep_largest_for_run(segmenter.card, keep_largest, strategy, corrector is not None)
    settings = (family, max_rotation_deg, strategy, modes, cancel, context_corrector, keep)
    for row, metrics, checks in map_cases(_score_case, [seed + i for i in range(n_cases)],
                                          (segmenter, corrector, settings), done):
        for mode in modes:
            vols[mode].append(metrics[mode])
            valid[mode].extend(checks[mode])
        per_case.append(row)
    out: Dict[str, Any] = {
        "data": {"family": family, "synthetic": True, "cases": n_cases, "seeds": [seed, seed + n_cases - 1],
                 "max_rotation_deg": max_rotation_deg if family == "heldout" else None,
                 "note": "synthetic cardiac phantoms; not patient data"},
        "segmenter": segmenter.card.name,
        "corrector": corrector.card.name if corrector is not None else None,
        "strategy": strategy,
        "context_corrector": context_corrector.card.name if context_corrector is not None else None,
        "keep_largest_component": keep,
        "per_case": per_case,
    }
    for mode in modes:
        summary = _summarise(vols[mode])
        summary["validity_rate"] = float(np.mean(valid[mode])) if valid[mode] else float("nan")
        out[mode] = summary
    out["seconds"] = time.perf_counter() - t0
    return out


def _score_case(case_seed: int, segmenter, corrector,
                settings) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, List[bool]]]:
    """One phantom of :func:`evaluate_segmenter`: ``(per-case row, volume metrics per mode,
    slice validity per mode)``."""

    family, max_rotation_deg, strategy, modes, cancel, context, keep = settings
    case = family_case(family, case_seed, max_rotation_deg)
    result = run_segcorrect(case.image, segmenter, corrector, cancel=cancel, strategy=strategy, context_corrector=context,
                            keep_largest=keep)
    truth = case.labels.array.astype(np.int64)
    row: Dict[str, Any] = {"seed": case_seed, "shape": list(case.image.shape),
                           "crops_tried": len(getattr(result.segmentation, "heart_search", []))}
    metrics: Dict[str, Any] = {}
    checks: Dict[str, List[bool]] = {}
    for mode, mask in (("raw", result.raw), ("final", result.final)):
        if mode not in modes:
            continue
        m = mask.array.astype(np.int64)
        metrics[mode] = volume_metrics(m, truth, case.labels.spacing)
        checks[mode] = [check_slice(m[z]).valid for z in range(m.shape[0]) if m[z].any() or truth[z].any()]
        row[mode] = {"dice": {k: round(v, 4) for k, v in metrics[mode]["dice"].items()},
                     "valid_slices": int(sum(checks[mode])), "slices": len(checks[mode])}
    return row, metrics, checks


def markdown_rows(report_: Mapping[str, Any]) -> str:
    """Markdown table: one row per mask (raw, final) with Dice per structure and validity."""
    lines = [f"| mask | {' | '.join(CARDIAC_NAMES)} | mean Dice | valid slices |",
             "|" + " --- |" * (len(CARDIAC_NAMES) + 3)]
    for mode in ("raw", "final"):
        if mode not in report_:
            continue
        d = report_[mode]["dice"]
        mean = float(np.mean([d[n] for n in CARDIAC_NAMES]))
        label = "segmenter (raw)" if mode == "raw" else f"after correction ({report_['corrector']})"
        lines.append(f"| {label} | " + "".join(f"{d[n]:.3f} | " for n in CARDIAC_NAMES)
                     + f"{mean:.3f} | {100 * report_[mode]['validity_rate']:.1f} % |")
    return "\n".join(lines)


def card_entry(report_: Mapping[str, Any]) -> Dict[str, Any]:
    """The card's ``heldout`` entry of a held-out-family report (:func:`evaluate_segmenter`):
    what the cases were, mean Dice per structure and valid slices of the raw and corrected
    masks (3 places), the correction and the command that made them."""
    data = report_["data"]
    entry: Dict[str, Any] = {
        "family": "clinicalai.phantoms.cardiac_heldout, never trained on (synthetic, not patient data)",
        "cases": data["cases"], "seeds": data["seeds"], "max_rotation_deg": data["max_rotation_deg"],
        "strategy": report_["strategy"] if "final" in report_ else None, "corrector": report_["corrector"],
    }
    for mode in ("raw", "final"):
        if mode in report_:
            dice = report_[mode]["dice"]
            entry[mode] = {"dice": {n: round(float(dice[n]), 3) for n in CARDIAC_NAMES},
                           "mean_dice": round(float(np.mean([dice[n] for n in CARDIAC_NAMES])), 3),
                           "valid_slices": round(float(report_[mode]["validity_rate"]), 3)}
    entry["command"] = report_.get("command")
    return entry


__all__ = ["FAMILIES", "card_entry", "evaluate_segmenter", "family_case", "markdown_rows"]

"""Evaluation of mask correction: Dice, HD95, ASSD (MONAI metrics) and validity, before and after.

On held-out *synthetic* data: cardiac phantom masks corrupted by
:mod:`.corruptions` (deterministic by seed) stand in for segmenter errors. For each corrector
(4-channel, and optionally the 3-slice context variant) three masks are scored against the
ground truth: the raw (corrupted) mask, the ungated correction (every slice replaced, the
source study's method) and the gated final mask.

Per volume and class: Dice, HD95 and ASSD in mm (``monai.metrics``); per slice: mean Dice over
present structures, its change after correction (distribution, and counts improved /
degraded by more than 0.02 and 0.3), and anatomical validity.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..casemap import CaseMapper, serial_map
from ..phantoms.cardiac import cardiac_case
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from . import LATENT_STEPS, MIN_AGREEMENT
from .corruptions import CORRUPTION_KINDS, corrupt_volume
from .labels import CARDIAC_NAME_OF, CARDIAC_NAMES, CARDIAC_VALUES
from .pipeline import correct_mask
from .validity import check_slice, label_dice

#: structure values scored (all of the ACDC table)
_VALUES = tuple(CARDIAC_VALUES.values())


def volume_metrics(pred: np.ndarray, truth: np.ndarray, spacing_xyz: Sequence[float],
                   values: Sequence[int] = _VALUES) -> Dict[str, Dict[str, float]]:
    """``{"dice"|"hd95"|"assd": {class name: value}}`` for one ``(z, y, x)`` volume (MONAI metrics).

    HD95 and ASSD are in mm (``spacing_xyz`` in ITK order); a class missing from the prediction
    or the truth gives NaN distances (left out of means).
    """
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    spacing_zyx = [float(s) for s in tuple(spacing_xyz)[::-1]]
    # crop to the structures (+ margin): distances do not change, the metric runs 5-10x faster
    fg = (np.asarray(pred) > 0) | (np.asarray(truth) > 0)
    if fg.any():
        ys, xs = np.nonzero(fg.any(axis=0))
        sl = (slice(None), slice(max(ys.min() - 2, 0), ys.max() + 3), slice(max(xs.min() - 2, 0), xs.max() + 3))
        pred, truth = np.asarray(pred)[sl], np.asarray(truth)[sl]
    p = torch.from_numpy(np.stack([pred == v for v in values])[None].astype(np.float32))
    t = torch.from_numpy(np.stack([truth == v for v in values])[None].astype(np.float32))
    out: Dict[str, Dict[str, float]] = {"dice": {}, "hd95": {}, "assd": {}}
    dice = compute_dice(p, t, include_background=True, ignore_empty=True).numpy()[0]
    both_present = [(p[0, i].any() and t[0, i].any()).item() for i in range(len(values))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns for empty classes; those are NaN here
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing_zyx).numpy()[0]
        asd = compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=spacing_zyx).numpy()[0]
    for i, v in enumerate(values):
        name = CARDIAC_NAME_OF.get(v, str(v))
        out["dice"][name] = float(dice[i])
        out["hd95"][name] = float(hd[i]) if both_present[i] else float("nan")
        out["assd"][name] = float(asd[i]) if both_present[i] else float("nan")
    return out


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray(values, float)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else float("nan")


def _summarise(per_volume: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for metric in ("dice", "hd95", "assd"):
        names = list(per_volume[0][metric].keys())
        out[metric] = {n: _nanmean([v[metric][n] for v in per_volume]) for n in names}
        out[metric]["mean"] = _nanmean([out[metric][n] for n in names])
    return out


def _changes(before: np.ndarray, after: np.ndarray) -> Dict[str, Any]:
    d = after - before
    n = len(d)
    return {
        "slices": int(n),
        "mean": float(d.mean()) if n else 0.0,
        "median": float(np.median(d)) if n else 0.0,
        "p5": float(np.percentile(d, 5)) if n else 0.0,
        "p95": float(np.percentile(d, 95)) if n else 0.0,
        "min": float(d.min()) if n else 0.0,
        "improved_0.02": int((d > 0.02).sum()), "degraded_0.02": int((d < -0.02).sum()),
        "improved_0.3": int((d > 0.3).sum()), "degraded_0.3": int((d < -0.3).sum()),
        "degraded_0.02_fraction": float((d < -0.02).mean()) if n else 0.0,
        "histogram": {"edges": [-1.0, -0.3, -0.02, 0.02, 0.3, 1.0],
                      "counts": np.histogram(np.clip(d, -1, 1), bins=[-1.0, -0.3, -0.02, 0.02, 0.3, 1.0])[0].tolist()},
    }


def evaluate_correctors(
    correctors: Mapping[str, Any],
    n_cases: int = 20,
    seed: int = 1000,
    corruption_probability: float = 0.7,
    min_agreement: float = MIN_AGREEMENT,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    strategy: str = "gate",
    map_cases: CaseMapper = serial_map,
    context_corrector: Optional[Any] = None,
    latent_steps: int = LATENT_STEPS,
    corruptions: Sequence[str] = CORRUPTION_KINDS,
) -> Dict[str, Any]:
    """Score each corrector on ``n_cases`` held-out corrupted phantoms (seeds ``seed..seed+n-1``);
    ``strategy`` as :func:`.pipeline.correct_mask` (the "gated" rows use it); ``map_cases``
    runs the (corrector, case) pairs (default: one after the other here; ``clinicalai.batch``
    gives one for Dask workers, same results); ``context_corrector``, ``latent_steps``: with
    ``strategy="evidence"``, the context NVAE as one more candidate source of every corrector's
    run and the latent-code optimisation's steps (:func:`.pipeline.correct_mask`);
    ``corruptions``: the kinds drawn (:data:`.corruptions.CORRUPTION_SETS`).

    Returns a JSON-able report: ``{"data", "variants": {name: {"raw"|"ungated"|"gated": {...}}}}``.
    """
    import torch

    threads = torch.get_num_threads()
    # MONAI's surface metrics run many tiny tensor ops: on a shared CPU they are ~10x faster
    # single-threaded (no thread-pool hand-offs); restored afterwards
    torch.set_num_threads(1)
    try:
        return _evaluate(correctors, n_cases, seed, corruption_probability, min_agreement, progress, cancel, strategy,
                         map_cases, (context_corrector, int(latent_steps)), tuple(corruptions))
    finally:
        torch.set_num_threads(threads)


def _evaluate(correctors, n_cases, seed, corruption_probability, min_agreement, progress, cancel,
              strategy: str = "gate", map_cases: CaseMapper = serial_map,
              sources: Tuple[Optional[Any], int] = (None, LATENT_STEPS),
              corruptions: Tuple[str, ...] = CORRUPTION_KINDS) -> Dict[str, Any]:
    t0 = time.perf_counter()
    cases = []
    for i in range(n_cases):
        case = cardiac_case(seed + i, ("ED", "ES")[i % 2])
        noisy, kinds = corrupt_volume(case.labels.array, [seed, i, 7], corruptions, probability=corruption_probability)
        cases.append((case, case.labels.with_array(noisy.astype(np.uint8)), kinds))
    report_: Dict[str, Any] = {
        "data": {"synthetic": True, "cases": n_cases, "seeds": [seed, seed + n_cases - 1],
                 "slices": int(sum(c.labels.shape[0] for c, _, _ in cases)),
                 "corrupted_slices": int(sum(bool(k) for _, _, ks in cases for k in ks)),
                 "corruption_probability": corruption_probability, "corruption_kinds": list(corruptions),
                 "note": "cardiac phantom masks with synthetic corruptions; not patient data"},
        "min_agreement": min_agreement,
        "strategy": strategy,
        "context_corrector": sources[0].card.name if sources[0] is not None and strategy == "evidence" else None,
        "latent_steps": sources[1] if strategy == "evidence" else None,
        "variants": {},
    }
    items = [(name, c) for name in correctors for c in cases]

    def done(step: int) -> None:
        check_cancel(cancel)
        report(progress, step / len(items), f"{items[step - 1][0]}: case {step}")

    check_cancel(cancel)
    scored = iter(map_cases(_score_correction, items, (correctors, min_agreement, strategy, sources), done))
    for name, model in correctors.items():
        vols: Dict[str, List[Dict[str, Dict[str, float]]]] = {"raw": [], "ungated": [], "gated": []}
        slice_dice: Dict[str, List[float]] = {"raw": [], "ungated": [], "gated": []}
        valid: Dict[str, List[bool]] = {"raw": [], "ungated": [], "gated": []}
        seconds = []
        winners: Dict[str, int] = {}
        for _ in cases:
            case_seconds, case_vols, case_dice, case_valid, case_winners = next(scored)
            seconds.append(case_seconds)
            for source in case_winners:
                winners[source] = winners.get(source, 0) + 1
            for mode in vols:
                vols[mode].append(case_vols[mode])
                slice_dice[mode].extend(case_dice[mode])
                valid[mode].extend(case_valid[mode])
        variant: Dict[str, Any] = {"context_slices": bool(model.card.input.channels == 12),
                                   "seconds_per_volume": float(np.mean(seconds))}
        before = np.asarray(slice_dice["raw"])
        for mode in ("raw", "ungated", "gated"):
            entry = _summarise(vols[mode])
            entry["slice_dice_mean"] = float(np.mean(slice_dice[mode]))
            entry["validity_rate"] = float(np.mean(valid[mode]))
            if mode != "raw":
                entry["dice_change"] = _changes(before, np.asarray(slice_dice[mode]))
            variant[mode] = entry
        # which candidate source won the slices the evidence strategy changed (most first)
        variant["gated"]["winning_sources"] = dict(sorted(winners.items(), key=lambda kv: (-kv[1], kv[0])))
        report_["variants"][name] = variant
    report_["seconds"] = time.perf_counter() - t0
    return report_


def _score_correction(item, correctors: Mapping[str, Any], min_agreement: float, strategy: str,
                      sources: Tuple[Optional[Any], int] = (None, LATENT_STEPS)):
    """One (corrector name, (case, corrupted mask, kinds)) of :func:`evaluate_correctors`:
    ``(seconds, volume metrics, slice Dice, slice validity, winning candidate sources)``, the
    middle three per mask (raw, ungated, gated), the sources of the evidence strategy's applied slices;
    ``sources``: ``(context corrector or None, latent steps)`` of the evidence strategy."""
    name, (case, noisy, _) = item
    truth = case.labels.array.astype(np.int64)
    evidence = strategy == "evidence"
    # the image is passed as with `clinicalai correct --image`: the evidence strategy uses it
    res = correct_mask(noisy, correctors[name], image=case.image, min_agreement=min_agreement, strategy=strategy,
                       context_corrector=sources[0] if evidence else None, latent_steps=sources[1])
    masks = {"raw": res.raw.array, "ungated": res.network.array, "gated": res.final.array}
    vols: Dict[str, Dict[str, Dict[str, float]]] = {}
    slice_dice: Dict[str, List[float]] = {mode: [] for mode in masks}
    valid: Dict[str, List[bool]] = {mode: [] for mode in masks}
    for mode, m in masks.items():
        m = m.astype(np.int64)
        vols[mode] = volume_metrics(m, truth, case.labels.spacing)
        for z in range(truth.shape[0]):
            if truth[z].any() or masks["raw"][z].any():
                slice_dice[mode].append(label_dice(m[z], truth[z], _VALUES))
                valid[mode].append(check_slice(m[z]).valid)
    winners = [s.source for s in res.slices if s.corrected and s.source]
    return res.timings.get("total_s", 0.0), vols, slice_dice, valid, winners


def markdown_table(report_: Mapping[str, Any]) -> str:
    """The evaluation as a Markdown table (one row per corrector and mask)."""
    data = report_["data"]
    lines = [
        f"Synthetic data: {data['cases']} held-out cardiac phantoms (seeds {data['seeds'][0]}-{data['seeds'][1]}), "
        f"{data['slices']} slices, {data['corrupted_slices']} corrupted. Not patient data."
        + (f" Evidence strategy with {report_['context_corrector']} as a candidate source."
           if report_.get("context_corrector") else ""),
        "",
        f"| corrector | mask | Dice mean | {' | '.join(CARDIAC_NAMES)} | HD95 mm | ASSD mm | slice Dice | valid slices "
        "| improved >0.02 / >0.3 | degraded >0.02 / >0.3 | degraded >0.02 (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in report_["variants"].items():
        for mode in ("raw", "ungated", "gated"):
            e = v[mode]
            ch = e.get("dice_change")
            gated = "corrected, evidence" if report_.get("strategy") == "evidence" else "corrected, gated"
            label = {"raw": "raw (corrupted)", "ungated": "corrected, ungated", "gated": gated}[mode]
            lines.append(
                f"| {name}{' (context)' if v['context_slices'] else ''} | {label} | {e['dice']['mean']:.3f} "
                + "".join(f"| {e['dice'][n]:.3f} " for n in CARDIAC_NAMES)
                + f"| {e['hd95']['mean']:.2f} | {e['assd']['mean']:.2f} | {e['slice_dice_mean']:.3f} "
                f"| {100 * e['validity_rate']:.1f} % "
                + (f"| {ch['improved_0.02']} / {ch['improved_0.3']} | {ch['degraded_0.02']} / {ch['degraded_0.3']} "
                   f"| {100 * ch['degraded_0.02_fraction']:.1f} |" if ch else "| - | - | - |")
            )
    return "\n".join(lines)

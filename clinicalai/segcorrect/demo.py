"""SegCorrect demo: a cardiac phantom through segmentation and gated NVAE correction.

Two runs with the bundled demo models (trained on phantoms; not for clinical use):

1. ``clinicalai segment``'s path: U-Net segmentation, then gated correction;
2. ``clinicalai correct``'s path: the phantom's ground truth with synthetic corruptions (a
   stand-in for a poor manual draft or another tool's mask), corrected with the gate.

Both are scored against the phantom's ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..models import bundled_model, load_model
from ..outputs import write_json
from ..phantoms.cardiac import cardiac_case
from ..progress import ProgressCallback, report, scaled
from ..volume import write_volume
from . import DEFAULT_CORRECTOR, DEFAULT_SEGMENTER
from .corruptions import corrupt_volume
from .labels import CARDIAC_VALUES
from .pipeline import correct_mask, run_segcorrect
from .validity import label_dice

DEMO_SEED = 4242


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return round(label_dice(pred, truth, tuple(CARDIAC_VALUES.values())), 4)


def segment_step(case: Any, segmenter: Any, corrector: Any, keep_largest: Optional[bool] = None,
                 progress: Optional[ProgressCallback] = None) -> Tuple[Any, Dict[str, Any]]:
    """The demo's ``segment`` step on ``case`` (a cardiac phantom with ground truth): the
    segmenter, then the gated correction; returns the :class:`~.pipeline.SegCorrectResult` and
    the summary the demo prints (Dice over RV / MYO / LV before and after correction, valid
    slices). ``scripts/demo_phantom_segmenter.py`` runs it with other segmenters."""
    res = run_segcorrect(case.image, segmenter, corrector, keep_largest=keep_largest, progress=progress)
    truth = case.labels.array
    s = res.correction.summary()
    return res, {"dice_raw": _dice(res.raw.array, truth), "dice_final": _dice(res.final.array, truth),
                 "corrected_slices": s["corrected"], "valid_raw": s["valid_raw"],
                 "valid_final": s["valid_final"], "seconds": round(res.timings["total_s"], 2)}


def run_demo(out_dir: Path, progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Run both paths on one phantom into ``out_dir``; returns a JSON-able summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    case = cardiac_case(DEMO_SEED, "ED")
    truth = case.labels.array
    corrector = load_model(bundled_model(DEFAULT_CORRECTOR), device="cpu")
    summary: Dict[str, Any] = {"phantom_seed": DEMO_SEED, "slices": int(truth.shape[0]),
                               "note": "synthetic phantom and demo models; not for clinical use"}
    write_volume(case.image, out_dir / "image.nii.gz")
    write_volume(case.labels, out_dir / "ground-truth.seg.nrrd")

    try:
        segmenter = load_model(bundled_model(DEFAULT_SEGMENTER), device="cpu")
    except Exception:  # noqa: BLE001 - the segmenter is another area's model; the demo goes on without it
        segmenter = None
    if segmenter is not None:
        report(progress, 0.0, "segmenting the phantom")
        res, summary["segment"] = segment_step(case, segmenter, corrector, progress=scaled(progress, 0.0, 0.6))
        write_volume(res.raw, out_dir / "segmented-raw.seg.nrrd")
        write_volume(res.final, out_dir / "segmented-final.seg.nrrd")
        write_json(res.to_dict(), out_dir / "segment-report.json")

    report(progress, 0.6, "correcting a corrupted mask")
    noisy, _ = corrupt_volume(truth, DEMO_SEED, probability=0.8)
    draft = case.labels.with_array(noisy.astype(np.uint8))
    res2 = correct_mask(draft, corrector, image=case.image, progress=scaled(progress, 0.6, 1.0))
    write_volume(res2.raw, out_dir / "draft-corrupted.seg.nrrd")
    write_volume(res2.final, out_dir / "draft-corrected.seg.nrrd")
    write_json(res2.to_dict(), out_dir / "correct-report.json")
    s2 = res2.summary()
    summary["correct"] = {"dice_raw": _dice(res2.raw.array, truth), "dice_final": _dice(res2.final.array, truth),
                          "dice_ungated": _dice(res2.network.array, truth), "corrected_slices": s2["corrected"],
                          "valid_raw": s2["valid_raw"], "valid_final": s2["valid_final"],
                          "seconds": round(res2.timings["total_s"], 2)}
    report(progress, 1.0, "done")
    return summary

"""Scoring a map (attribution or anomaly) against a manual lesion mask.

One entry point, :func:`score_map`, used by ``clinicalai explain --lesion``, the
AttributionViewer table and the generative anomaly maps (issue #7), so every map in the
product is judged by the same numbers:

- ``dice``: Dice of the thresholded map (threshold fixed, a percentile of the map, or the
  precision/recall operating point chosen on a validation set with :func:`choose_threshold`);
- ``auroc``; ``pauc_fpr10``: AUROC up to 10 % false positives, McClish-standardised as
  ``sklearn.metrics.roc_auc_score(max_fpr=0.1)`` returns it (0.5 = chance, 1 = perfect);
- ``auprc``: average precision (area under the precision/recall curve);
- ``pointing_game``: 1 if the map's maximum lies in the lesion, else 0;
- ``positive_share``: share of the positive map mass that lies inside the lesion;

all over the voxels of ``mask`` (e.g. the brain) when one is given. :func:`map_correlation`
gives the Pearson (or Spearman) correlation between two maps.

Maps are scored as they are: higher values mean "more lesion". For a signed attribution map
pass ``use_abs=True`` to score ``|map|`` instead.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from ..volume import Volume

ArrayLike = Union[Volume, np.ndarray]

#: the partial-AUC bound used by :func:`score_map` (10 % false positive rate)
PAUC_MAX_FPR = 0.1
#: the lesion scores of :func:`score_map` that are averaged over cases and printed
SCORE_KEYS = ("dice", "auroc", "pauc_fpr10", "auprc", "pointing_game", "positive_share")
#: the columns of the model comparison table (``clinicalai evaluate classifier``)
TABLE_KEYS = ("dice", "auroc", "pauc_fpr10", "auprc", "pointing_game")
#: the headline subset shown in the demo, the viewer's metric table and a generative model's card
HEADLINE_KEYS = ("dice", "auroc", "auprc", "pointing_game")


def _as_array(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, Volume):
        return np.asarray(x.array)
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_inputs(map_: ArrayLike, lesion: ArrayLike, mask: Optional[ArrayLike]):
    for other, what in ((lesion, "lesion mask"), (mask, "brain mask")):
        if isinstance(map_, Volume) and isinstance(other, Volume) and not map_.same_grid(other, atol=1e-4):
            raise InputError(
                f"the map and the {what} are not on the same grid (shape/spacing/origin/direction differ); "
                "resample the mask onto the image first"
            )
    m = _as_array(map_, "map").astype(np.float64)
    les = _as_array(lesion, "lesion mask")
    if m.shape != les.shape:
        raise InputError(f"the map has shape {m.shape} but the lesion mask has shape {les.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError("the map holds NaN or infinite values")
    les = les > 0
    if mask is None:
        region = np.ones(m.shape, bool)
    else:
        region = _as_array(mask, "brain mask")
        if region.shape != m.shape:
            raise InputError(f"the brain mask has shape {region.shape} but the map has shape {m.shape}")
        region = region > 0
        if not region.any():
            raise InputError("the brain mask is empty")
    return m, les, region


def threshold_value(values: np.ndarray, threshold: Union[float, str]) -> float:
    """The numeric threshold for ``threshold`` given the map ``values`` (inside the mask).

    ``threshold`` is a number (fixed), or ``"percentile:P"`` (the P-th percentile of the
    values, e.g. ``"percentile:95"`` keeps the top 5 %), or ``"otsu"`` (Otsu's threshold,
    scikit-image).
    """
    if isinstance(threshold, (int, float, np.floating)) and not isinstance(threshold, bool):
        return float(threshold)
    if isinstance(threshold, str):
        t = threshold.strip().lower()
        if t.startswith("percentile:") or t.startswith("p") and t[1:].replace(".", "", 1).isdigit():
            p = float(t.split(":", 1)[1] if ":" in t else t[1:])
            if not 0 <= p <= 100:
                raise InputError(f"percentile threshold must be in 0..100, got {p}")
            return float(np.percentile(values, p))
        if t == "otsu":
            from skimage.filters import threshold_otsu

            return float(threshold_otsu(values)) if np.ptp(values) > 0 else float(values.max())
    raise InputError(
        f"threshold must be a number, 'percentile:P' or 'otsu', got {threshold!r}"
    )


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary arrays, by ``monai.metrics.compute_dice``.

    Both empty gives 1.0, one empty gives 0.0 (``ignore_empty=False``): a healthy image whose
    thresholded map is empty is a correct "no lesion".
    """
    import torch
    from monai.metrics import compute_dice

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32)).reshape(1, 1, -1)
    t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32)).reshape(1, 1, -1)
    return float(compute_dice(p, t, include_background=True, ignore_empty=False).item())


def score_map(
    map: ArrayLike,  # noqa: A002 - the natural name in the public signature
    lesion: ArrayLike,
    mask: Optional[ArrayLike] = None,
    threshold: Union[float, str] = "percentile:95",
    use_abs: bool = False,
    max_fpr: float = PAUC_MAX_FPR,
    pointing_tolerance: int = 0,
) -> Dict[str, Any]:
    """Score ``map`` against the manual ``lesion`` mask.

    Args:
        map: the map (attribution or anomaly), ``(z, y, x)`` or any shape; higher = more lesion.
        lesion: manual lesion mask (non-zero = lesion), same shape (same grid for Volumes).
        mask: optional region (e.g. brain mask): every metric only counts voxels inside it,
            and the thresholded map is empty outside it.
        threshold: for ``dice``: a number (fixed, in map units), ``"percentile:P"`` of the map
            values inside ``mask``, or ``"otsu"``; use :func:`choose_threshold` on a
            validation set to get the precision/recall operating point as a number.
        use_abs: score ``|map|`` (for signed attribution maps whose sign is not meaningful).
        max_fpr: bound of the partial AUROC (default 0.1 = 10 % false positives).
        pointing_tolerance: the pointing game also counts a maximum within this many voxels
            of the lesion (dilation; 0 = strictly inside).

    Returns:
        A JSON-able dict: ``dice``, ``threshold`` (the numeric value used), ``threshold_spec``,
        ``precision``, ``recall`` (of the thresholded map), ``auroc``, ``pauc_fpr10`` (the
        standardised partial AUROC up to ``max_fpr``), ``auprc``, ``pointing_game``,
        ``positive_share``, ``lesion_voxels``, ``voxels`` (in the region). The ranking metrics
        (AUROC, pAUC, AUPRC) are ``None`` when the region has no lesion voxel or only lesion
        voxels, and ``pointing_game`` is ``None`` without a lesion.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    m, les, region = _check_inputs(map, lesion, mask)
    if use_abs:
        m = np.abs(m)
    values = m[region]
    truth = les[region]
    thr = threshold_value(values, threshold)
    pred = values >= thr
    tp = int(np.count_nonzero(pred & truth))
    n_pred, n_true = int(pred.sum()), int(truth.sum())
    out: Dict[str, Any] = {
        "dice": dice_score(pred, truth),
        "threshold": thr,
        "threshold_spec": threshold if isinstance(threshold, str) else "fixed",
        "precision": (tp / n_pred) if n_pred else None,
        "recall": (tp / n_true) if n_true else None,
        "voxels": int(values.size),
        "lesion_voxels": n_true,
    }
    has_both = 0 < n_true < truth.size
    if has_both and np.ptp(values) > 0:
        out["auroc"] = float(roc_auc_score(truth, values))
        out["pauc_fpr10"] = float(roc_auc_score(truth, values, max_fpr=max_fpr))
        out["auprc"] = float(average_precision_score(truth, values))
    elif has_both:  # a constant map ranks nothing: chance level, prevalence for AUPRC
        out["auroc"], out["pauc_fpr10"], out["auprc"] = 0.5, 0.5, float(n_true / truth.size)
    else:
        out["auroc"] = out["pauc_fpr10"] = out["auprc"] = None
    out["pointing_game"] = _pointing_game(m, les, region, pointing_tolerance) if n_true else None
    pos = np.clip(values, 0, None)
    total = float(pos.sum())
    out["positive_share"] = float(pos[truth].sum() / total) if total > 0 else None
    return out


def _pointing_game(m: np.ndarray, les: np.ndarray, region: np.ndarray, tolerance: int) -> float:
    # the maximum over the region; ties broken by the first voxel in C order (deterministic)
    masked = np.where(region, m, -np.inf)
    idx = np.unravel_index(int(np.argmax(masked)), m.shape)
    target = les
    if tolerance > 0:
        from scipy import ndimage

        target = ndimage.binary_dilation(les, iterations=int(tolerance))
    return 1.0 if bool(target[idx]) else 0.0


def choose_threshold(
    maps: Iterable[ArrayLike],
    lesions: Iterable[ArrayLike],
    masks: Optional[Iterable[Optional[ArrayLike]]] = None,
    use_abs: bool = False,
) -> float:
    """The precision/recall operating point on a validation set: the threshold that maximises
    F1 (= Dice) over the pooled voxels of all cases (inside their masks).

    Pass the returned number as ``score_map(..., threshold=t)`` on test cases.
    """
    from sklearn.metrics import precision_recall_curve

    maps, lesions = list(maps), list(lesions)
    masks = list(masks) if masks is not None else [None] * len(maps)
    if not maps or len(maps) != len(lesions) or len(masks) != len(maps):
        raise InputError("choose_threshold needs as many maps as lesion masks (and masks), at least one")
    values, truths = [], []
    for m_, l_, k_ in zip(maps, lesions, masks):
        m, les, region = _check_inputs(m_, l_, k_)
        values.append(np.abs(m[region]) if use_abs else m[region])
        truths.append(les[region])
    v, t = np.concatenate(values), np.concatenate(truths)
    if not t.any():
        raise InputError("the validation set has no lesion voxel; an operating point cannot be chosen")
    precision, recall, thresholds = precision_recall_curve(t, v)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(thresholds[best])


def map_correlation(a: ArrayLike, b: ArrayLike, mask: Optional[ArrayLike] = None, method: str = "pearson") -> float:
    """Correlation between two maps over ``mask`` (``"pearson"`` or ``"spearman"``; scipy).

    A constant map has no defined correlation: 0.0 is returned.
    """
    from scipy import stats

    if isinstance(a, Volume) and isinstance(b, Volume) and not a.same_grid(b, atol=1e-4):
        raise InputError("the two maps are not on the same grid")
    x, y = _as_array(a, "map").astype(np.float64), _as_array(b, "map").astype(np.float64)
    if x.shape != y.shape:
        raise InputError(f"the two maps have different shapes {x.shape} and {y.shape}")
    if mask is not None:
        region = _as_array(mask, "mask") > 0
        x, y = x[region], y[region]
    x, y = x.ravel(), y.ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    if method == "pearson":
        return float(stats.pearsonr(x, y)[0])
    if method == "spearman":
        return float(stats.spearmanr(x, y)[0])
    raise InputError(f"correlation method must be 'pearson' or 'spearman', got {method!r}")


def summarize_scores(scores: Sequence[Dict[str, Any]], keys: Sequence[str] = SCORE_KEYS) -> Dict[str, Dict[str, Optional[float]]]:
    """Mean and standard deviation of each metric over cases (``None`` values skipped)."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for k in keys:
        vals = [s[k] for s in scores if s.get(k) is not None]
        out[k] = {
            "mean": float(np.mean(vals)) if vals else None,
            "std": float(np.std(vals)) if vals else None,
            "n": len(vals),
        }
    return out

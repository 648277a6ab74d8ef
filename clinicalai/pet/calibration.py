"""Calibration of the PET fold ensemble: how far P(recurrence) can be read as a frequency.

- :func:`reliability_table`, :func:`brier_score`, :func:`expected_calibration_error` and
  :func:`calibration_report`: labels ``(N,)`` in {0, 1} against probabilities ``(N,)`` in [0, 1];
- :func:`fit_temperature` / :func:`apply_temperature`: one temperature ``T`` for the fold
  models' logits (``sigmoid(logit / T)``), fitted on data that is not the evaluation set;
- :func:`uncertainty`: the "uncertain" state of one prediction (folds disagree, or the
  probability is near the decision threshold); its thresholds live here only.

Numpy only at import (the GUIs import this through :mod:`clinicalai.pet.workflow`); sklearn /
scipy are imported inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

#: fold models disagreeing by more than this (max - min P(recurrence)) make a result uncertain
UNCERTAIN_SPREAD = 0.3
#: a mean P(recurrence) within this distance of 0.5 makes a result uncertain: on the held-out
#: family the ensemble is not calibrated finely enough for a 0.4 vs 0.6 to mean different things
UNCERTAIN_MARGIN = 0.1

#: what the panels' Grad-CAM map holds (``PetResult.cam_evidence``: the Grad-CAM weighted by
#: P(recurrence), so its brightness reads as the ensemble's confidence); its colour bar's unit
CAM_EVIDENCE_UNITS = "Grad-CAM x P(recurrence)"
#: the panels' default display threshold of that map: a case the ensemble calls negative
#: shows nothing (P x Grad-CAM < 0.2 everywhere when P < 0.2) until the user lowers it
CAM_EVIDENCE_THRESHOLD = 0.2
#: clip probabilities this far from 0 / 1 before taking logits (finite logits for saturated folds)
_EPS = 1e-6


def _as_arrays(labels: Sequence[int], probs: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) must be non-empty and of one length")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("probabilities must lie in [0, 1]")
    return y, p


def brier_score(labels: Sequence[int], probs: Sequence[float]) -> float:
    """Mean squared difference between P(recurrence) and the label (0 best, 0.25 = always 0.5)."""
    y, p = _as_arrays(labels, probs)
    return float(np.mean((p - y) ** 2))


def reliability_table(labels: Sequence[int], probs: Sequence[float], n_bins: int = 5) -> List[Dict[str, Any]]:
    """Equal-width probability bins over [0, 1] (the last bin closed): per bin ``lo``, ``hi``,
    ``n`` cases, ``mean_probability`` and ``fraction_positive`` (``None`` in empty bins)."""
    y, p = _as_arrays(labels, probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-open bins except the last, so p == 1 falls into the top bin
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        rows.append({"lo": round(float(edges[b]), 4), "hi": round(float(edges[b + 1]), 4), "n": n,
                     "mean_probability": round(float(p[sel].mean()), 4) if n else None,
                     "fraction_positive": round(float(y[sel].mean()), 4) if n else None})
    return rows


def expected_calibration_error(labels: Sequence[int], probs: Sequence[float], n_bins: int = 5) -> float:
    """ECE: the case-weighted mean of ``|fraction_positive - mean_probability|`` over the bins of
    :func:`reliability_table` (0 = calibrated)."""
    y, p = _as_arrays(labels, probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    gaps = [abs(y[idx == b].mean() - p[idx == b].mean()) * np.sum(idx == b) for b in range(n_bins) if np.any(idx == b)]
    return float(np.sum(gaps) / y.size)


def calibration_report(labels: Sequence[int], probs: Sequence[float], n_bins: int = 5) -> Dict[str, Any]:
    """JSON-able calibration figures: ``n``, ``brier``, ``ece``, ``reliability`` (the table)."""
    return {"n": int(len(labels)), "brier": round(brier_score(labels, probs), 4),
            "ece": round(expected_calibration_error(labels, probs, n_bins), 4),
            "reliability": reliability_table(labels, probs, n_bins)}


def brier_difference(labels: Sequence[int], probs_a: Sequence[float], probs_b: Sequence[float],
                     n_boot: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """Brier(b) - Brier(a) on the same cases with a paired bootstrap 95% interval: ``value`` and
    ``ci95`` (negative: ``b`` is better). Says whether a small change is more than case noise."""
    y, pa = _as_arrays(labels, probs_a)
    _, pb = _as_arrays(labels, probs_b)
    d = (pb - y) ** 2 - (pa - y) ** 2
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(axis=1)
    return {"value": round(float(d.mean()), 4),
            "ci95": [round(float(np.percentile(boots, 2.5)), 4), round(float(np.percentile(boots, 97.5)), 4)]}


def logit(probs: "Sequence[float] | np.ndarray") -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(logits: "Sequence[float] | np.ndarray", temperature: float) -> np.ndarray:
    """``sigmoid(logit / T)``: ``T > 1`` pulls probabilities towards 0.5, ``T < 1`` away; the
    ranking (and so the AUC) does not change."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return 1.0 / (1.0 + np.exp(-z))


def fit_temperature(logits: Sequence[float], labels: Sequence[int], bounds: Tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising the binary cross-entropy of ``sigmoid(logits / T)`` against
    ``labels``; logits ``(N,)`` (e.g. every fold's logit on every case, labels repeated).
    Searched on ``log T`` within ``bounds`` (a separable set drives ``T`` to the lower bound)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y, _ = _as_arrays(labels, np.full(z.shape, 0.5))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        # log(1 + exp(-s)) for y = 1 and log(1 + exp(s)) for y = 0, without overflow
        return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -s, s))))

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


@dataclass
class Uncertainty:
    """The "uncertain" state of one prediction: ``uncertain`` and the sentences saying why."""

    uncertain: bool
    reasons: List[str] = field(default_factory=list)


def uncertainty(probability: float, fold_probabilities: Sequence[float],
                spread_threshold: float = UNCERTAIN_SPREAD, margin: float = UNCERTAIN_MARGIN,
                unlike_training: Sequence[str] = ()) -> Uncertainty:
    """Uncertain when the fold models disagree by more than ``spread_threshold`` (max - min),
    the mean P(recurrence) lies within ``margin`` of 0.5, or the PET is unlike the folds'
    training PETs (``unlike_training``: the sentence saying so, from
    :func:`clinicalai.pet.workflow.unlike_training_warning`)."""
    reasons = list(unlike_training)
    probs = list(fold_probabilities)
    if len(probs) > 1 and max(probs) - min(probs) > spread_threshold:
        reasons.append(f"the fold models disagree (P(recurrence) from {min(probs):.2f} to {max(probs):.2f})")
    if abs(probability - 0.5) < margin:
        reasons.append(f"P(recurrence) {probability:.2f} is within {margin:.2f} of the 0.5 threshold")
    return Uncertainty(bool(reasons), reasons)

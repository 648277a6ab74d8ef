"""Valid candidates for an anatomically invalid slice, chosen by the evidence.

The gate of :mod:`.pipeline` accepts only corrections that barely change a slice (Dice with
the raw mask >= 0.96), so it can never fix a badly wrong one. Here, for an invalid slice:

1. **candidates** come from several sources: the corrector network's output, the smallest
   repair taken from it (:func:`.pipeline.repair_slice`), and classical topological repairs of
   the raw slice and of the network output (:func:`topological_repairs`: largest component
   per structure, holes filled, background pockets closed, a broken myocardial ring closed
   outwards or inwards), each alone and chained;
2. only **valid** candidates (every criterion of :func:`.validity.check_slice`) compete;
3. the winner is the one the **evidence** supports best (:class:`Evidence`): the mean
   log-probability of its labels under the segmenter's own softmax where there is one (a
   segmentation run), else agreement with the raw mask (a mask from another tool). With
   probabilities, closeness to the raw mask is not the rule, so a repair that redraws a badly
   wrong slice can win when the segmenter's probabilities support it.

Anatomical priors beyond validity come from Painchaud et al. 2020's latent-space search
(:mod:`.latent`), whose valid decodings join the list as candidates of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .validity import SliceValidity, check_slice, label_dice

_EIGHT = np.ones((3, 3), bool)
_FOUR = ndimage.generate_binary_structure(2, 1)
#: probabilities are clipped here before the log (a label the segmenter rules out costs ~14)
_EPS = 1e-6
#: without probabilities, a best candidate agreeing less than this (mean Dice) with the raw
#: slice is offered for review, not applied: on corrupted phantoms such redraws lost more
#: than 0.02 Dice on most of the slices they touched (docs/segcorrect.md, chosen on seeds 1000-1019)
REVIEW_AGREEMENT = 0.9


@dataclass
class Candidate:
    """One proposed slice: where it came from, its validity, and the evidence for it."""

    source: str
    labels: np.ndarray
    validity: SliceValidity
    score: float = float("-inf")

    def to_dict(self) -> Dict[str, object]:
        return {"source": self.source, "valid": self.validity.valid, "failed": self.validity.failed,
                "score": round(float(self.score), 4)}


@dataclass
class Evidence:
    """What a candidate slice is scored against.

    Attributes:
        values: the label values, in the order of the probability channels 1..
        probabilities: the segmenter's softmax for this slice ``(C, y, x)``, channel 0
            background and channel i the i-th value of ``values``; the score is then the mean
            log-probability of a candidate's labels.
        raw: the raw slice; without probabilities the score is the mean Dice with it (a mask
            from another tool). Intensity models of the image were tried as evidence for such
            masks and chose worse candidates than agreement on the phantoms (mean Dice 0.824 vs
            0.853 on 8 corrupted held-out cases): RV and LV share one blood intensity.
    """

    values: Sequence[int]
    probabilities: Optional[np.ndarray] = None
    raw: Optional[np.ndarray] = None

    @property
    def kind(self) -> str:
        return "segmenter probabilities" if self.probabilities is not None else "agreement with the raw mask"

    def score(self, labels: np.ndarray, region: np.ndarray) -> float:
        """Higher is better; compared only between candidates of one slice (same ``region``)."""
        if self.probabilities is not None:
            index = np.zeros(int(max(self.values)) + 1, np.int64)
            for i, v in enumerate(self.values):
                index[int(v)] = i + 1
            chosen = np.take_along_axis(self.probabilities, index[labels][None], axis=0)[0]
            return float(np.mean(np.log(np.clip(chosen[region], _EPS, 1.0))))
        return label_dice(labels, self.raw, [int(v) for v in self.values]) if self.raw is not None else 0.0


def needs_review(best: Candidate, evidence: Evidence, min_agreement: float = REVIEW_AGREEMENT) -> bool:
    """Whether the best valid candidate should be offered rather than applied: only without
    the segmenter's probabilities, when it agrees with the raw slice less than ``min_agreement``
    (mean Dice over labels). Nothing but the raw mask speaks for such a redraw, and the raw
    mask speaks against it: "never worse where the raw mask was right"."""
    return evidence.probabilities is None and evidence.raw is not None and best.score < min_agreement


# ------------------------------------------------------------------------------- repairs
def _refill(labels: np.ndarray, removed: np.ndarray, probabilities: Optional[np.ndarray],
            forbidden: int, values: Sequence[int]) -> np.ndarray:
    """Give the ``removed`` pixels a label: the segmenter's most probable one other than
    ``forbidden`` where probabilities exist, else the label of the nearest kept pixel."""
    out = labels.copy()
    if not removed.any():
        return out
    if probabilities is not None:
        order = [0] + [int(v) for v in values]
        p = probabilities.copy()
        p[order.index(int(forbidden))] = -1.0
        out[removed] = np.asarray(order)[p.argmax(0)][removed]
        return out
    _, (iy, ix) = ndimage.distance_transform_edt(removed, return_indices=True)
    out[removed] = labels[iy[removed], ix[removed]]
    return out


def keep_largest_components(labels: np.ndarray, values: Mapping[str, int],
                            probabilities: Optional[np.ndarray] = None) -> np.ndarray:
    """Each structure reduced to its largest 8-connected component; the rest relabelled."""
    out = labels.copy()
    all_values = list(values.values())
    for v in all_values:
        lab, n = ndimage.label(out == v, structure=_EIGHT)
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            removed = (lab > 0) & (lab != 1 + int(np.argmax(sizes)))
            out = _refill(out, removed, probabilities, v, all_values)
    return out


def fill_holes(labels: np.ndarray, values: Mapping[str, int]) -> np.ndarray:
    """RV and LV holes take the structure's label; a myocardium hole that is not LV becomes
    LV when it is enclosed by the ring (the cavity), and background pockets inside the heart
    take the label of the nearest heart pixel."""
    out = labels.copy()
    rv, myo, lv = values["RV"], values["MYO"], values["LV"]
    for v in (rv, lv):
        region = out == v
        out[ndimage.binary_fill_holes(region) & ~region] = v
    ring = out == myo
    inside = ndimage.binary_fill_holes(ring | (out == lv)) & ~ring & (out != lv)
    out[inside] = lv
    heart = np.isin(out, [rv, myo, lv])
    pockets = ndimage.binary_fill_holes(heart) & ~heart
    if pockets.any():
        _, (iy, ix) = ndimage.distance_transform_edt(~heart, return_indices=True)
        out[pockets] = out[iy[pockets], ix[pockets]]
    return out


def close_ring(labels: np.ndarray, values: Mapping[str, int], outward: bool = True) -> np.ndarray:
    """Close the myocardium around the LV where the cavity touches background or the RV:
    ``outward`` paints the outside neighbours MYO; inward turns the cavity's offending edge
    into MYO. Either way LV and RV are left apart by MYO."""
    out = labels.copy()
    myo, lv = values["MYO"], values["LV"]
    cavity = out == lv
    if not cavity.any():
        return out
    outside = ~np.isin(out, [myo, lv])  # background or RV
    if outward:
        out[ndimage.binary_dilation(cavity, structure=_FOUR) & outside] = myo
    else:
        out[cavity & ndimage.binary_dilation(outside, structure=_FOUR)] = myo
    # at the image border a cavity cannot be enclosed by dilation: its border pixels become MYO
    border = np.zeros_like(cavity)
    border[[0, -1], :] = border[:, [0, -1]] = True
    out[(out == lv) & border] = myo
    return out


def rebuild_ring(labels: np.ndarray, values: Mapping[str, int]) -> np.ndarray:
    """A fragmented myocardium redrawn as a ring of its own mean thickness around the LV
    cavity (thickness = MYO area / cavity perimeter, at least one pixel); the fragments
    outside the ring and the RV pixels it covers give way to it."""
    out = labels.copy()
    myo, lv = values["MYO"], values["LV"]
    cavity = ndimage.binary_fill_holes(out == lv)
    if not cavity.any() or not (out == myo).any():
        return out
    _, n = ndimage.label(cavity, structure=_EIGHT)
    if n > 1:
        lab, _ = ndimage.label(cavity, structure=_EIGHT)
        cavity = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    perimeter = int((cavity & ~ndimage.binary_erosion(cavity, structure=_FOUR)).sum())
    width = max(1, int(round((out == myo).sum() / max(perimeter, 1))))
    ring = ndimage.binary_dilation(cavity, structure=_FOUR, iterations=width) & ~cavity
    old_myo = out == myo
    out[old_myo & ~ring] = 0
    out[ring] = myo
    out[cavity] = lv
    # what the old fragments left (now background) and any RV cut off take their neighbours' labels
    return fill_holes(keep_largest_components(out, values), values)


def topological_repairs(labels: np.ndarray, values: Mapping[str, int],
                        probabilities: Optional[np.ndarray] = None) -> List[Tuple[str, np.ndarray]]:
    """``[(name, repaired slice)]``: each repair alone and the chains that combine them."""
    def chain(*steps: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        out = labels
        for step in steps:
            out = step(out)
        return out

    largest = lambda a: keep_largest_components(a, values, probabilities)  # noqa: E731
    holes = lambda a: fill_holes(a, values)  # noqa: E731
    out_ring = lambda a: close_ring(a, values, outward=True)  # noqa: E731
    in_ring = lambda a: close_ring(a, values, outward=False)  # noqa: E731
    rebuilt = lambda a: rebuild_ring(a, values)  # noqa: E731
    return [
        ("largest components", chain(largest)),
        ("holes filled", chain(holes)),
        ("largest components + holes", chain(largest, holes)),
        ("ring closed outwards", chain(largest, holes, out_ring, largest, holes, out_ring)),
        ("ring closed inwards", chain(largest, holes, in_ring, largest, holes, in_ring)),
        ("ring rebuilt", chain(largest, holes, rebuilt, out_ring)),
    ]


def candidates_for_slice(
    raw: np.ndarray,
    proposals: Mapping[str, np.ndarray],
    values: Mapping[str, int],
    evidence: Evidence,
    extra: Sequence[Tuple[str, np.ndarray]] = (),
) -> List[Candidate]:
    """Every candidate for an invalid ``raw`` slice, scored, best valid first (invalid last).

    ``proposals``: other sources' slices by name (the network output, its smallest repair,
    the context NVAE's output); each is also repaired topologically. ``extra``: candidates
    taken as they are, unrepaired (the latent search's valid decodings, :mod:`.latent`).
    Candidates equal to ``raw`` or to an earlier one are
    dropped. Scores are taken over the union of every candidate's heart, grown by 3 pixels,
    so all candidates of a slice are judged on the same pixels.
    """
    probs = evidence.probabilities
    pool: List[Tuple[str, np.ndarray]] = []
    for name, proposal in proposals.items():
        pool.append((name, np.asarray(proposal)))
    for name, repaired in topological_repairs(np.asarray(raw), values, probs):
        pool.append((name, repaired))
    for pname, proposal in proposals.items():
        for name, repaired in topological_repairs(np.asarray(proposal), values, probs)[-3:]:
            pool.append((f"{pname}, {name}", repaired))
    pool.extend((name, np.asarray(lab)) for name, lab in extra)
    unique: List[Tuple[str, np.ndarray]] = []
    for name, lab in pool:
        if np.array_equal(lab, raw) or any(np.array_equal(lab, u) for _, u in unique):
            continue
        unique.append((name, lab))
    heart_values = list(values.values())
    union = np.isin(raw, heart_values)
    for _, lab in unique:
        union |= np.isin(lab, heart_values)
    region = ndimage.binary_dilation(union, structure=_EIGHT, iterations=3) if union.any() else np.ones_like(union)
    out = [Candidate(name, lab, check_slice(lab, values)) for name, lab in unique]
    for c in out:
        c.score = evidence.score(c.labels, region)
    out.sort(key=lambda c: (not c.validity.valid, -c.score))
    return out


__all__ = ["REVIEW_AGREEMENT", "Candidate", "Evidence", "candidates_for_slice", "needs_review", "close_ring", "fill_holes", "keep_largest_components",
           "rebuild_ring", "topological_repairs"]

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
   segmentation run); else (a mask from another tool) its agreement with the raw mask plus
   what the image says (:class:`IntensityModel`: the log-likelihood of the slice's
   intensities under the candidate's labels, per pixel of the raw heart) and what the valid
   neighbouring slices say (agreement with them). With the image, candidates refined on it (:func:`image_refined`)
   join the pool. With probabilities, closeness to the raw mask is not the rule, so a repair
   that redraws a badly wrong slice can win when the segmenter's probabilities support it.

Anatomical priors beyond validity come from Painchaud et al. 2020's latent-space search
(:mod:`.latent`), whose valid decodings join the list as candidates of their own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..morphology import binary_fill_holes
from .validity import SliceValidity, check_slice, label_dice

_EIGHT = np.ones((3, 3), bool)
_FOUR = ndimage.generate_binary_structure(2, 1)
#: probabilities are clipped here before the log (a label the segmenter rules out costs ~14)
_EPS = 1e-6
#: without probabilities, a best candidate agreeing less than this (mean Dice) with the raw
#: slice is offered for review, not applied, unless the evidence beyond the raw mask supports it
#: more than the raw slice (:func:`needs_review`); 0.9 on seeds 1000-1019 before the shape term,
#: 0.85 with it (seeds 1000-1039: 98.4 % -> 99.1 % valid, docs/segcorrect.md)
REVIEW_AGREEMENT = 0.85
#: without probabilities, with the image: weight of the shape term, the corrector NVAE's
#: reconstruction log-likelihood of a candidate (mean nats per pixel of its heart and of the
#: reconstruction's, :attr:`SliceContext.shape`); and the near tie: valid candidates scoring
#: within ``NEAR_TIE`` of the best are won by the one agreeing most with the raw slice. Chosen
#: together on the validation corruptions (seeds 1000-1039, offline re-scoring of every
#: candidate, ``scripts/segcorrect_rescore.py``; docs/segcorrect.md), never on 3000-3019: 0.2 /
#: 0.01 first (11 -> 8 slices of 449 degraded); with the local repairs in the pool the shape
#: term did more harm than good (it favours idealised rings, and is noisiest where the
#: under-trained NVAE reconstructs a slice worst): 0 / 0.025 degrade 3 slices, 0.2 / 0.01 8,
#: both at 99.1 % valid. At 0 the NVAE pass over the candidates is skipped.
SHAPE_WEIGHT = 0.0
NEAR_TIE = 0.025
#: without probabilities, weights of the image's log-likelihood (nats summed over the scored
#: pixels per pixel of the raw heart) and of the mean Dice with the valid neighbouring slices,
#: added to the agreement with the raw slice; chosen on the validation corruptions (seeds
#: 1000-1019, docs/segcorrect.md), never on 3000-3019
IMAGE_WEIGHT = 0.5
NEIGHBOUR_WEIGHT = 0.5
#: intensity histogram bins, and the ICM smoothness weight (nats per agreeing 8-neighbour) of
#: :func:`image_refined`; 0.5 gave the validation corruptions' best candidates (1.0, 2.0 fewer)
HISTOGRAM_BINS = 48
ICM_BETA = 0.5
#: a background pocket with a pixel this deep (pixels from its edge; 6 across) is a hole, not a speckle
#: (:func:`fill_speckles`): the dropout's grains are 1-2 pixels, a few merged at most
SPECKLE_DEPTH = 3.0
#: candidates (best agreement first) that are refined on the image, and how far (pixels) a
#: refinement may move the heart's outline
REFINED_SEEDS = 6
REFINE_GROW = 4


@dataclass
class Candidate:
    """One proposed slice: where it came from, its validity, and the evidence for it."""

    source: str
    labels: np.ndarray
    validity: SliceValidity
    score: float = float("-inf")
    #: mean Dice with the raw slice, and (without probabilities) how much more the image and
    #: the neighbouring slices support this candidate than the raw slice (score units)
    agreement: float = float("nan")
    margin: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        return {"source": self.source, "valid": self.validity.valid, "failed": self.validity.failed,
                "score": round(float(self.score), 4), "agreement": round(float(self.agreement), 4)}


@dataclass
class IntensityModel:
    """Intensity histograms per label of one image, fitted under a mask's confident interior.

    Attributes:
        edges: bin edges ``(bins + 1,)`` in image units (robust range of the fitted pixels;
            values outside fall in the end bins).
        log_p: log-probability ``(1 + n labels, bins)`` of a bin given the label: row 0
            background, row i the i-th of ``values``.
        values: the label values of rows 1..
    """

    edges: np.ndarray
    log_p: np.ndarray
    values: Tuple[int, ...]

    @classmethod
    def fit(cls, image: np.ndarray, labels: np.ndarray, values: Sequence[int],
            bins: int = HISTOGRAM_BINS) -> Optional["IntensityModel"]:
        """Fit on ``image`` / ``labels`` ``(z, y, x)`` (the raw mask): each structure's pixels
        eroded by one (8-neighbourhood, per slice: boundaries are partial volume and the
        corruptions sit there), and background in a band 3-8 pixels around the heart (what a
        candidate can move into). ``None`` when the mask has no structure."""
        values = tuple(int(v) for v in values)
        pixels: List[List[np.ndarray]] = [[] for _ in range(len(values) + 1)]
        for z in range(labels.shape[0]):
            heart = np.isin(labels[z], values)
            if not heart.any():
                continue
            for i, v in enumerate(values):
                pixels[i + 1].append(image[z][ndimage.binary_erosion(labels[z] == v, _EIGHT)])
            band = ndimage.binary_dilation(heart, _EIGHT, iterations=8) & ~ndimage.binary_dilation(heart, _EIGHT, iterations=2)
            pixels[0].append(image[z][band])
        flat = [np.concatenate(p) if p else np.zeros(0, image.dtype) for p in pixels]
        every = np.concatenate(flat)
        if every.size == 0:
            return None
        lo, hi = np.percentile(every, [0.5, 99.5])
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        log_p = np.zeros((len(flat), bins))
        for i, x in enumerate(flat):
            counts = np.histogram(np.clip(x, edges[0], edges[-1]), edges)[0].astype(float)
            # smoothed, and one pseudo-count per bin: a label never seen at an intensity is unlikely, not impossible
            counts = ndimage.gaussian_filter1d(counts, 1.0) + 1.0
            log_p[i] = np.log(counts / counts.sum())
        return cls(edges, log_p, values)

    def unary(self, image: np.ndarray) -> np.ndarray:
        """``(1 + n labels, y, x)`` log-likelihood of each pixel of a ``(y, x)`` slice per label row."""
        b = np.clip(np.searchsorted(self.edges, image, side="right") - 1, 0, self.log_p.shape[1] - 1)
        return self.log_p[:, b]

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """Label values ``(y, x)`` -> rows of :attr:`log_p` (unknown values count as background)."""
        index = np.zeros(max(int(labels.max(initial=0)), max(self.values)) + 1, np.int64)
        for i, v in enumerate(self.values):
            index[v] = i + 1
        return index[labels]


@dataclass
class SliceContext:
    """What a slice's candidates are judged against besides the raw mask, without probabilities.

    Attributes:
        image: the image slice ``(y, x)`` the mask was drawn on, or ``None``.
        model: the image's :class:`IntensityModel` (fitted once per volume), or ``None``.
        neighbours: the final masks ``(y, x)`` of the adjacent slices that are valid.
        shape: ``labels (k, y, x) -> (k,)``: how plausible the corrector NVAE finds each slice
            (log-likelihood of its labels under the NVAE's reconstruction of it, mean nats
            per pixel), or ``None``; batched, so a slice's candidates cost one network pass.
    """

    image: Optional[np.ndarray] = None
    model: Optional[IntensityModel] = None
    neighbours: Sequence[np.ndarray] = ()
    shape: Optional[Callable[[np.ndarray], np.ndarray]] = None


@dataclass
class Evidence:
    """What a candidate slice is scored against.

    Attributes:
        values: the label values, in the order of the probability channels 1..
        probabilities: the segmenter's softmax for this slice ``(C, y, x)``, channel 0
            background and channel i the i-th value of ``values``; the score is then the mean
            log-probability of a candidate's labels.
        raw: the raw slice; without probabilities the score is the mean Dice with it (a mask
            from another tool) plus :meth:`support`: ``IMAGE_WEIGHT`` x the image's
            log-likelihood under the candidate per pixel of the raw heart and
            ``NEIGHBOUR_WEIGHT`` x its mean Dice with the valid neighbours (``context``). The image alone chose worse candidates than
            agreement (RV and LV share one blood intensity); the three together better.
        context: image, intensity model and neighbours (:class:`SliceContext`).
    """

    values: Sequence[int]
    probabilities: Optional[np.ndarray] = None
    raw: Optional[np.ndarray] = None
    context: SliceContext = field(default_factory=SliceContext)
    _shapes: Dict[bytes, float] = field(default_factory=dict, repr=False)

    def prepare_shapes(self, slices: Sequence[np.ndarray]) -> None:
        """Score the shape term of ``slices`` ``[(y, x)]`` in one batch (the candidates of a slice)."""
        if self.context.shape is None:
            return
        todo = {_key(lab): lab for lab in slices if _key(lab) not in self._shapes}
        if todo:
            values = self.context.shape(np.stack(list(todo.values())))
            self._shapes.update(zip(todo, (float(v) for v in values)))

    def shape_score(self, labels: np.ndarray) -> float:
        """The shape term of ``labels`` (:attr:`SliceContext.shape`; 0 without one)."""
        if self.context.shape is None:
            return 0.0
        self.prepare_shapes([labels])
        return self._shapes[_key(labels)]

    @property
    def kind(self) -> str:
        if self.probabilities is not None:
            return "segmenter probabilities"
        extra = [w for w, ok in (("image", self.has_image), ("neighbouring slices", bool(self.context.neighbours))) if ok]
        return "agreement with the raw mask" + "".join(f", {w}" for w in extra)

    @property
    def has_image(self) -> bool:
        return self.context.image is not None and self.context.model is not None

    @cached_property
    def _unary(self) -> np.ndarray:
        """The image slice's log-likelihood per label row (computed once per slice)."""
        return self.context.model.unary(self.context.image)

    def agreement(self, labels: np.ndarray) -> float:
        """Mean Dice of ``labels`` with the raw slice over ``values`` (1.0 without a raw slice)."""
        return label_dice(labels, self.raw, [int(v) for v in self.values]) if self.raw is not None else 1.0

    def support(self, labels: np.ndarray, region: np.ndarray, with_shape: bool = True) -> float:
        """Without probabilities, what the image and the neighbours say for ``labels`` (score units).

        The image's log-likelihood is summed over ``region`` and divided by the raw slice's heart
        pixels, not averaged over ``region``: a Dice with the raw slice moves with the changed
        pixels over a structure's size, so this keeps the two comparable on a small apical heart
        as on a large basal one (on the validation corruptions the mean over ``region`` let
        agreement outvote the image on small hearts: 9 slices degraded instead of 4).

        The image term is the objective :func:`image_refined` maximises, not its likelihood part
        alone: the log-likelihood minus ``ICM_BETA`` per pair of unlike 8-neighbours (the Potts
        prior). Scored by the likelihood alone, an image-refined candidate wins by the noise it
        was fitted to: on the validation corruptions (seeds 1000-1079, three blocks of 449-451
        slices) most slices the rule degraded went to an image-refined redraw with a ragged
        outline by a score margin of 0.02-0.1; with the prior 22 slices degrade instead of 28,
        with a higher slice Dice on all three blocks (docs/segcorrect.md)."""
        out = 0.0
        if with_shape and self.context.shape is not None:
            out += SHAPE_WEIGHT * self.shape_score(labels)
        if self.has_image:
            rows = self.context.model.rows(labels)
            heart = max(int(np.count_nonzero(np.isin(self.raw, [int(v) for v in self.values]))), 1)
            ll = np.take_along_axis(self._unary, rows[None], axis=0)[0]
            out += IMAGE_WEIGHT * (float(ll[region].sum()) - ICM_BETA * unlike_neighbour_pairs(labels)) / heart
        if self.context.neighbours:
            values = [int(v) for v in self.values]
            out += NEIGHBOUR_WEIGHT * float(np.mean([label_dice(labels, n, values) for n in self.context.neighbours]))
        return out

    def score(self, labels: np.ndarray, region: np.ndarray, with_shape: bool = True) -> float:
        """Higher is better; compared only between candidates of one slice (same ``region``);
        ``with_shape``: include the shape term (:attr:`SliceContext.shape`) where there is one."""
        if self.probabilities is not None:
            index = np.zeros(int(max(self.values)) + 1, np.int64)
            for i, v in enumerate(self.values):
                index[int(v)] = i + 1
            chosen = np.take_along_axis(self.probabilities, index[labels][None], axis=0)[0]
            return float(np.mean(np.log(np.clip(chosen[region], _EPS, 1.0))))
        if self.raw is None:
            return 0.0
        return self.agreement(labels) + self.support(labels, region, with_shape)


def needs_review(best: Candidate, evidence: Evidence, min_agreement: float = REVIEW_AGREEMENT) -> bool:
    """Whether the best valid candidate should be offered rather than applied: only without
    the segmenter's probabilities, when it agrees with the raw slice less than ``min_agreement``
    (mean Dice over labels) and the image and the neighbouring slices do not support it more
    than the raw slice (``best.margin <= 0``; always so without an image or valid neighbours).
    Then nothing but the raw mask speaks for such a redraw, and the raw mask speaks against
    it: "never worse where the raw mask was right"."""
    return evidence.probabilities is None and evidence.raw is not None and best.agreement < min_agreement \
        and best.margin <= 0.0


def _key(labels: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(labels).tobytes()).digest() + repr(labels.shape).encode()


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
        out[binary_fill_holes(region) & ~region] = v
    ring = out == myo
    inside = binary_fill_holes(ring | (out == lv)) & ~ring & (out != lv)
    out[inside] = lv
    heart = np.isin(out, [rv, myo, lv])
    pockets = binary_fill_holes(heart) & ~heart
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
    cavity = binary_fill_holes(out == lv)
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


def unlike_neighbour_pairs(labels: np.ndarray) -> int:
    """Pairs of 8-neighbouring pixels of ``labels`` ``(y, x)`` with different labels (each pair
    once): the length of the outlines, as the Potts prior of :func:`image_refined` counts it."""
    labels = np.asarray(labels)
    return int(np.count_nonzero(labels[:, 1:] != labels[:, :-1]) + np.count_nonzero(labels[1:, :] != labels[:-1, :])
               + np.count_nonzero(labels[1:, 1:] != labels[:-1, :-1]) + np.count_nonzero(labels[1:, :-1] != labels[:-1, 1:]))


def image_refined(labels: np.ndarray, image: np.ndarray, model: IntensityModel,
                  beta: float = ICM_BETA, iterations: int = 6, grow: int = REFINE_GROW) -> np.ndarray:
    """``labels`` ``(y, x)`` redrawn on the image: iterated conditional modes, each pixel within
    ``grow`` pixels of the heart taking the label that maximises its intensity log-likelihood
    (``model``) plus ``beta`` per 8-neighbour of that label, for ``iterations`` sweeps
    (simultaneous updates; stops when nothing changes). Pixels farther out keep their label.
    Why: a mask from another tool is wrong where it disagrees with the image (a shifted or
    eroded structure, a hole of the wrong label), and no repair of its shape alone can find
    where the image's edges are; RV and LV share one intensity, so the smoothness term keeps
    each where its neighbours are."""
    heart = np.isin(labels, model.values)
    if not heart.any():
        return labels.copy()
    region = ndimage.binary_dilation(heart, _EIGHT, iterations=grow)
    ys, xs = np.nonzero(region)
    box = (slice(max(ys.min() - 1, 0), ys.max() + 2), slice(max(xs.min() - 1, 0), xs.max() + 2))
    unary, inside = model.unary(image[box]), region[box]
    rows = model.rows(labels[box])
    kernel = np.ones((3, 3))
    kernel[1, 1] = 0
    for _ in range(iterations):
        votes = np.stack([ndimage.convolve((rows == r).astype(float), kernel, mode="constant")
                          for r in range(unary.shape[0])])
        new = np.where(inside, (unary + beta * votes).argmax(0), rows)
        if np.array_equal(new, rows):
            break
        rows = new
    out = labels.copy()
    out[box] = np.where(inside, np.array((0,) + model.values, labels.dtype)[rows], labels[box])
    return out


def topological_repairs(labels: np.ndarray, values: Mapping[str, int],
                        probabilities: Optional[np.ndarray] = None) -> List[Tuple[str, np.ndarray]]:
    """``[(name, repaired slice)]``: each repair alone and the chains that combine them (the
    last three: :func:`ring_repairs`)."""
    largest = keep_largest_components(labels, values, probabilities)
    cleaned = fill_holes(largest, values)
    return [
        ("largest components", largest),
        ("holes filled", fill_holes(labels, values)),
        ("largest components + holes", cleaned),
        *_ring_chains(cleaned, values, probabilities),
    ]


def ring_repairs(labels: np.ndarray, values: Mapping[str, int],
                 probabilities: Optional[np.ndarray] = None) -> List[Tuple[str, np.ndarray]]:
    """The last three of :func:`topological_repairs` (the ring closed or rebuilt), without
    computing the first three."""
    cleaned = fill_holes(keep_largest_components(labels, values, probabilities), values)
    return _ring_chains(cleaned, values, probabilities)


def _ring_chains(cleaned: np.ndarray, values: Mapping[str, int],
                 probabilities: Optional[np.ndarray]) -> List[Tuple[str, np.ndarray]]:
    """The ring chains from the slice with its largest components kept and holes filled
    (``cleaned``), which every chain starts with: ring closed, then cleaned again and closed
    again; or rebuilt and closed outwards."""
    def closed_twice(outward: bool) -> np.ndarray:
        once = close_ring(cleaned, values, outward=outward)
        again = fill_holes(keep_largest_components(once, values, probabilities), values)
        return close_ring(again, values, outward=outward)

    return [
        ("ring closed outwards", closed_twice(True)),
        ("ring closed inwards", closed_twice(False)),
        ("ring rebuilt", close_ring(rebuild_ring(cleaned, values), values, outward=True)),
    ]


def _disc(radius: int) -> np.ndarray:
    """A disc structuring element ``(2r + 1, 2r + 1)`` of ``radius`` pixels."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return np.hypot(y, x) <= radius + 0.5


def relabel_islands(labels: np.ndarray, values: Mapping[str, int]) -> np.ndarray:
    """Each structure's misplaced components (8-connected) take the most common other label on
    their outer 8-neighbour ring, or LV where that ring is only wall and cavity (a cavity under
    another label). The component kept is the largest, except for the LV: the one whose ring
    is most myocardium (the cavity), so an LV patch inside the RV larger than an apical cavity
    is the one relabelled; and for the RV: one not enclosed by the wall. Why not the nearest pixel's label
    (:func:`keep_largest_components` without probabilities): an LV patch inside the RV that
    touches the septum is mostly surrounded by RV, and the nearest-pixel rule hands its septal
    half to the myocardium; its surroundings say what it was."""
    out = labels.copy()
    for name, v in values.items():
        lab, n = ndimage.label(labels == v, structure=_EIGHT)
        if n < 2:
            continue
        rings, boxes = [], ndimage.find_objects(lab)
        for k, box in enumerate(boxes, start=1):
            grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
            island = lab[grown] == k
            rings.append((grown, island, labels[grown][ndimage.binary_dilation(island, structure=_EIGHT) & ~island]))
        sizes = [int(island.sum()) for _, island, _ in rings]
        # enclosed by the wall (its ring only MYO / LV): a cavity, whatever it was called
        enclosed = [bool(ring.size) and bool(np.all(np.isin(ring, (values["MYO"], values["LV"])))) for _, _, ring in rings]
        if name == "LV":
            myo = [float(np.mean(ring == values["MYO"])) if ring.size else 0.0 for _, _, ring in rings]
            keep = max(range(n), key=lambda i: (myo[i], sizes[i]))
        else:
            keep = max(range(n), key=lambda i: (name == "MYO" or not enclosed[i], sizes[i]))
        for i, (grown, island, ring) in enumerate(rings):
            ring = ring[ring != v]
            if i == keep:
                continue
            if name != "MYO" and enclosed[i]:
                out[grown][island] = values["LV"]
            else:
                out[grown][island] = int(np.bincount(ring).argmax()) if ring.size else 0
    return out


def misplaced_cavity_as_rv(labels: np.ndarray, values: Mapping[str, int]) -> np.ndarray:
    """The LV components other than the cavity (the one whose outer ring is most myocardium)
    relabelled RV: what a whole RV labelled LV looks like (a second "cavity" outside the wall).
    Unchanged when the LV is one component."""
    out = labels.copy()
    lv, myo = values["LV"], values["MYO"]
    lab, n = ndimage.label(labels == lv, structure=_EIGHT)
    if n < 2:
        return out
    share = []
    for k in range(1, n + 1):
        island = lab == k
        ring = labels[ndimage.binary_dilation(island, structure=_EIGHT) & ~island]
        share.append((float(np.mean(ring == myo)) if ring.size else 0.0, int(island.sum())))
    keep = 1 + max(range(n), key=lambda i: share[i])
    out[(lab > 0) & (lab != keep)] = values["RV"]
    return out


def close_walls(labels: np.ndarray, values: Mapping[str, int], radius: int = 2) -> np.ndarray:
    """Gaps and notches narrower than the disc closed: each structure's mask closed with a disc
    of ``radius`` pixels, the background it adds taking its label (RV, then LV, then MYO): a
    myocardium broken by a speckle dropout or a narrow missing wedge is whole again, where
    :func:`close_ring` would rather move the cavity's edge. A slice without such gaps is
    returned unchanged (closing adds nothing to a convex outline, and only background is taken)."""
    out = labels.copy()
    disc = _disc(radius)
    pad = radius + 1  # closing near the slice border must not see the border as background
    for name in ("RV", "LV", "MYO"):
        region = out == values[name]
        if region.any():
            closed = ndimage.binary_closing(np.pad(region, pad), structure=disc)[pad:-pad, pad:-pad]
            out[closed & (out == 0)] = values[name]
    return out


def fill_gaps(labels: np.ndarray, values: Mapping[str, int], name: str, width: int = 2) -> np.ndarray:
    """Thin background gaps inside the heart filled by structure ``name`` growing into them
    (at most ``width`` pixels): the background the heart encloses, and the background that
    closing the heart's outline with a disc of ``width`` adds away from any contact of
    ``name`` with another structure (the corner where the RV meets the wall is left alone: the
    two touch there). Undoes an erosion of that structure (a myocardium shrunk away from its
    cavity and from the RV), which leaves gaps no hole filling labels right (:func:`fill_holes`
    gives each gap pixel its nearest structure, half of them the cavity)."""
    out = labels.copy()
    v = values[name]
    own = out == v
    if not own.any():
        return out
    heart = np.isin(out, list(values.values()))
    others = heart & ~own
    pad = width + 1
    closed = ndimage.binary_closing(np.pad(heart, pad), structure=_disc(width))[pad:-pad, pad:-pad]
    contact = (ndimage.binary_dilation(own, structure=_FOUR) & others) | (ndimage.binary_dilation(others, structure=_FOUR) & own)
    near_contact = ndimage.binary_dilation(contact, structure=_disc(2 * width + 1)) if contact.any() else contact
    gap = ((closed & ~near_contact) | binary_fill_holes(heart)) & ~heart
    grown = ndimage.binary_dilation(own, structure=_FOUR, iterations=width, mask=gap | own)
    out[grown & gap] = v
    return out


def fill_speckles(labels: np.ndarray, values: Mapping[str, int], radius: int = 2) -> np.ndarray:
    """Background speckles inside and along the heart filled by the structure around them: each
    8-connected pocket of background the heart encloses, or that closing a structure with a
    disc of ``radius`` pixels adds, takes the most common heart label on its outer
    8-neighbour ring, if no pixel of it lies ``SPECKLE_DEPTH`` deep (a wider pocket is
    a hole, left to :func:`fill_holes`). Undoes a speckle dropout (a structure's pixels dropped to background in
    small grains), where :func:`fill_holes` gives each grain its nearest pixel's label (the
    grains on the cavity's edge become LV islands in the wall) and :func:`close_walls` lets the
    cavity's closing take them first. ``labels``: ``(y, x)`` label values; returns a copy."""
    out = labels.copy()
    heart = np.isin(labels, list(values.values()))
    if not heart.any():
        return out
    # each structure closed alone (as :func:`close_walls`): closing the heart's outline would
    # also fill the corner where the RV meets the wall, which no speckle made
    pad = radius + 1  # closing near the slice border must not see the border as background
    gaps = binary_fill_holes(heart)
    for v in values.values():
        region = np.pad(labels == v, pad)
        if region.any():
            gaps |= ndimage.binary_closing(region, structure=_disc(radius))[pad:-pad, pad:-pad]
    lab, _ = ndimage.label(gaps & ~heart, structure=_EIGHT)
    for k, box in enumerate(ndimage.find_objects(lab), start=1):
        grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        pocket = lab[grown] == k
        if ndimage.distance_transform_edt(np.pad(pocket, 1)).max() >= SPECKLE_DEPTH:
            continue  # wider than a grain: a hole (a cavity, :func:`fill_holes`), not a speckle
        ring = labels[grown][ndimage.binary_dilation(pocket, structure=_EIGHT) & ~pocket]
        ring = ring[np.isin(ring, list(values.values()))]
        if ring.size:
            out[grown][pocket] = int(np.bincount(ring).argmax())
    return out


def local_repairs(labels: np.ndarray, values: Mapping[str, int]) -> List[Tuple[str, np.ndarray]]:
    """``[(name, repaired slice)]``: the repairs of :func:`topological_repairs` cannot undo a
    few corruptions (validation seeds 1000-1039, docs/segcorrect.md): an island of the wrong
    label (:func:`relabel_islands`), a whole RV labelled LV (:func:`misplaced_cavity_as_rv`),
    a narrow gap or notch in a wall (:func:`close_walls`) and an eroded structure
    (:func:`fill_gaps`); the last two after the islands are relabelled and holes filled, the
    wall closures also chained with the ring closed outwards; and background speckles in a
    structure (:func:`fill_speckles`, issue 14's speckle dropout)."""
    islands = relabel_islands(labels, values)
    base = fill_holes(islands, values)
    as_rv = fill_holes(misplaced_cavity_as_rv(labels, values), values)
    out = [("islands relabelled by their surroundings", islands), ("islands relabelled + holes", base),
           ("second LV component as RV", as_rv), ("second LV component as RV, ring closed outwards",
                                                  close_ring(as_rv, values, outward=True))]
    for radius in (2, 3):
        walls = close_walls(base, values, radius)
        out.append((f"walls closed (radius {radius})", walls))
        out.append((f"walls closed (radius {radius}), ring closed outwards", close_ring(walls, values, outward=True)))
    for name in ("RV", "MYO", "LV"):
        out.append((f"gaps filled by {name}", fill_gaps(islands, values, name)))
    for radius in (2, 3):
        # a grain on the cavity's edge, mostly cavity around, goes to the LV and opens the ring
        speckles = fill_speckles(labels, values, radius)
        out.append((f"speckles filled (radius {radius})", speckles))
        out.append((f"speckles filled (radius {radius}), ring closed outwards", close_ring(speckles, values, outward=True)))
    return out


def _pool(raw: np.ndarray, proposals: Mapping[str, np.ndarray], values: Mapping[str, int],
          probabilities: Optional[np.ndarray], extra: Sequence[Tuple[str, np.ndarray]]) -> List[Tuple[str, np.ndarray]]:
    """The proposals, the raw slice's topological and local repairs, the proposals' last three, and
    ``extra``, as ``[(source, labels)]``, in that order, without ``raw`` and duplicates."""
    pool: List[Tuple[str, np.ndarray]] = [(name, np.asarray(p)) for name, p in proposals.items()]
    pool.extend(topological_repairs(np.asarray(raw), values, probabilities))
    pool.extend(local_repairs(np.asarray(raw), values))
    for pname, proposal in proposals.items():
        for name, repaired in ring_repairs(np.asarray(proposal), values, probabilities):
            pool.append((f"{pname}, {name}", repaired))
    pool.extend((name, np.asarray(lab)) for name, lab in extra)
    return _unique(raw, pool)


def _unique(raw: np.ndarray, pool: Sequence[Tuple[str, np.ndarray]],
            seen: Sequence[Tuple[str, np.ndarray]] = ()) -> List[Tuple[str, np.ndarray]]:
    unique: List[Tuple[str, np.ndarray]] = []
    for name, lab in pool:
        if np.array_equal(lab, raw) or any(np.array_equal(lab, u) for _, u in list(seen) + unique):
            continue
        unique.append((name, lab))
    return unique


def _refined(raw: np.ndarray, pool: Sequence[Tuple[str, np.ndarray]], values: Mapping[str, int],
             evidence: Evidence) -> List[Tuple[str, np.ndarray]]:
    """With an image and no probabilities: the raw slice refined on the image
    (:func:`image_refined`) with its topological repairs, and the ``REFINED_SEEDS`` valid
    candidates of ``pool`` closest to the raw slice refined with their last three repairs,
    as ``[("image-refined SOURCE[, REPAIR]", labels)]`` not already in ``pool``."""
    if evidence.probabilities is not None or not evidence.has_image:
        return []
    image, model = evidence.context.image, evidence.context.model
    seeds = sorted(((n, lab) for n, lab in pool if check_slice(lab, values).valid),
                   key=lambda c: -evidence.agreement(c[1]))[:REFINED_SEEDS]
    out: List[Tuple[str, np.ndarray]] = []
    refined = image_refined(np.asarray(raw), image, model)
    out.append(("image-refined raw", refined))
    out.extend((f"image-refined raw, {n}", lab) for n, lab in topological_repairs(refined, values))
    for name, lab in seeds:
        refined = image_refined(lab, image, model)
        out.append((f"image-refined {name}", refined))
        out.extend((f"image-refined {name}, {n}", r) for n, r in ring_repairs(refined, values))
    return _unique(raw, out, pool)


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
    With an image in ``evidence`` (and no probabilities), candidates refined on the image
    join (:func:`_refined`). Candidates equal to ``raw`` or to an earlier one are
    dropped. Scores are taken over the union of every candidate's heart, grown by 3 pixels,
    so all candidates of a slice (and the raw slice, for ``margin``) are judged on the same pixels.
    """
    pool = _pool(raw, proposals, values, evidence.probabilities, extra)
    pool += _refined(raw, pool, values, evidence)
    heart_values = list(values.values())
    union = np.isin(raw, heart_values)
    for _, lab in pool:
        union |= np.isin(lab, heart_values)
    region = ndimage.binary_dilation(union, structure=_EIGHT, iterations=3) if union.any() else np.ones_like(union)
    out = [Candidate(name, lab, check_slice(lab, values)) for name, lab in pool]
    if evidence.probabilities is None:
        # invalid candidates never win: they are scored without the shape term (no network pass)
        evidence.prepare_shapes([np.asarray(raw)] + [c.labels for c in out if c.validity.valid])
    raw_support = evidence.support(np.asarray(raw), region) if evidence.probabilities is None else 0.0
    for c in out:
        c.score = evidence.score(c.labels, region, c.validity.valid)
        c.agreement = evidence.agreement(c.labels)
        if evidence.probabilities is None:
            c.margin = evidence.support(c.labels, region, c.validity.valid) - raw_support
    out.sort(key=lambda c: (not c.validity.valid, -c.score))
    if evidence.probabilities is None and out and out[0].validity.valid:
        # a near tie goes to the candidate closest to the raw mask: where the image, the
        # neighbours and the shape barely tell candidates apart, the raw mask is the evidence left
        near = [c for c in out if c.validity.valid and c.score >= out[0].score - NEAR_TIE]
        closest = max(range(len(near)), key=lambda i: near[i].agreement)  # the first of equals: the best score
        out.insert(0, out.pop(closest))
    return out


__all__ = ["IMAGE_WEIGHT", "NEAR_TIE", "NEIGHBOUR_WEIGHT", "REVIEW_AGREEMENT", "SHAPE_WEIGHT", "Candidate", "Evidence", "IntensityModel", "SliceContext",
           "image_refined", "candidates_for_slice", "needs_review", "close_ring", "fill_holes", "keep_largest_components",
           "rebuild_ring", "topological_repairs", "ring_repairs", "relabel_islands", "misplaced_cavity_as_rv", "close_walls", "fill_gaps",
           "fill_speckles", "local_repairs"]

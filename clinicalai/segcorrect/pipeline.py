"""Gated mask correction and the whole SegCorrect workflow (segment, then correct).

The source study's NVAE corrector smooths masks and removes artefacts, but on average it
gained almost nothing and sometimes destroyed a good slice (0.96 -> 0.2 Dice). Here the
correction is *gated* per slice, on anatomical validity (:mod:`.validity`):

1. a slice whose raw mask is valid is kept as it is;
2. optionally, a slice the segmenter is confident in (``slice_confidence`` >= threshold) is kept;
3. otherwise the gate looks for the *smallest* use of the correction that makes the slice
   valid (:func:`repair_slice`): it takes, one connected region at a time, the pixels where
   the network disagrees with the raw mask, and keeps a region only when it removes failed
   validity criteria, erases no structure, and leaves the slice agreeing with the raw mask
   (mean Dice >= ``min_agreement``). The network's boundary smoothing, which fixes nothing
   and moved many good slices away from the truth, is never taken;
4. if no such repair exists, the whole corrected slice is used when it is valid, not empty
   where the raw one had structures, and still agrees with the raw mask (a correction that
   redraws the slice is a hallucination, not a repair);
5. everything else keeps the raw mask. Every decision is reported with its reason.

All masks are :class:`~clinicalai.volume.Volume` on the input grid, exactly: the network runs
in the 128 x 128 frame of :mod:`.preprocess` and its softmax is mapped back by the frame's
exact inverse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..errors import InputError, ModelError
from ..models.card import segments_from_card
from ..models.fit import input_warnings
from ..progress import CancelToken, ProgressCallback, check_cancel, report, scaled
from ..volume import Volume
from . import LATENT_STEPS, MIN_AGREEMENT, STRATEGIES
from .candidates import SHAPE_WEIGHT, Candidate, Evidence, IntensityModel, SliceContext, candidates_for_slice, needs_review
from .corrector import check_corrector, correct_slices, is_context_model, one_hot_stack
from .latent import (LATENT_DECODES, latent_decodings, optimised_decodings, supports_latent_search,
                     valid_decodings)
from .labels import CARDIAC_NAMES, cardiac_mask_hint
from .outputs import low_confidence_warning, unconfirmed_heart_warning
from .preprocess import NETWORK_SIZE, SliceFrame, frame_from_mask, from_network, to_network
from .segmenter import keeps_largest_component, segment_volume
from .validity import CRITERIA, SliceValidity, cardiac_values_from_labels, check_slice, label_dice

_EIGHT = np.ones((3, 3), bool)

CORRECTED = "corrected"
KEPT_RAW = "kept raw"
#: at most this many validity checks per slice while searching for a repair (a slice of
#: boundary noise can have hundreds of disagreeing specks; the gate must stay interactive)
MAX_REPAIR_CHECKS = 400


@dataclass
class SliceDecision:
    """What the gate did with one slice (index along z of the input volume)."""

    index: int
    valid_before: bool
    valid_after: bool
    criteria_before: Dict[str, bool]
    criteria_after: Dict[str, bool]
    dice_raw_vs_corrected: float
    decision: str  # "corrected" or "kept raw"
    reason: str
    confidence: Optional[float] = None
    #: pixels of the proposed correction that differ from the raw slice
    pixels_changed: int = 0
    #: ``strategy="evidence"``: the winning candidate's source and score, and the ranking
    source: Optional[str] = None
    score: Optional[float] = None
    candidates: List[Dict[str, Any]] = field(default_factory=list)
    #: the masks of ``candidates``, same order (not in the JSON report): what a panel offers
    #: as "next best" (:meth:`CorrectionResult.candidate`)
    ranking: List[Candidate] = field(default_factory=list, repr=False, compare=False)

    @property
    def corrected(self) -> bool:
        return self.decision == CORRECTED

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index, "valid_before": self.valid_before, "valid_after": self.valid_after,
            "failed_before": [k for k, ok in self.criteria_before.items() if not ok],
            "failed_after": [k for k, ok in self.criteria_after.items() if not ok],
            "criteria_before": dict(self.criteria_before), "criteria_after": dict(self.criteria_after),
            "dice_raw_vs_corrected": round(float(self.dice_raw_vs_corrected), 4),
            "decision": self.decision, "reason": self.reason,
            "confidence": None if self.confidence is None else round(float(self.confidence), 4),
            "pixels_changed": int(self.pixels_changed),
            "source": self.source,
            "score": None if self.score is None else round(float(self.score), 4),
            "candidates": list(self.candidates),
        }

    def table_row(self) -> Dict[str, Any]:
        """One row of the GUI / report table (short strings)."""
        return {
            "slice": self.index,
            "valid raw": "yes" if self.valid_before else "no: " + ", ".join(k for k, ok in self.criteria_before.items() if not ok),
            "valid corrected": "yes" if self.valid_after else "no: " + ", ".join(k for k, ok in self.criteria_after.items() if not ok),
            "Dice raw vs corrected": round(float(self.dice_raw_vs_corrected), 3),
            "decision": self.decision,
            "reason": self.reason,
        }


TABLE_COLUMNS = ("slice", "valid raw", "valid corrected", "Dice raw vs corrected", "decision", "reason")


@dataclass
class CorrectionResult:
    """Raw, corrected and final (gated) masks on the input grid, with the per-slice decisions.

    Attributes:
        raw: the mask given (label values as in the corrector's card).
        corrected: per slice, the correction the gate judged: the smallest repair taken from
            the network's output where one makes the slice valid (:func:`repair_slice`), else
            the network's output itself. Accepting a slice (``with_choices``, the GUI) uses it.
        final: raw where the gate kept it, corrected where it accepted the correction.
        network: the corrector network's output on every slice (with ``gate=False`` this is
            ``final``: the source study's method).
        slices: one :class:`SliceDecision` per slice along z.
        timings: seconds per step (``preprocess_s``, ``network_s``, ``postprocess_s``,
            ``gate_s``, ``total_s``).
        gate: whether gating was on (off: ``final`` is ``corrected``, the study's method).
        corrector: the corrector's card name.
        settings: gate settings (``min_agreement``, ``confidence_threshold``).
    """

    raw: Volume
    corrected: Volume
    final: Volume
    slices: List[SliceDecision]
    network: Optional[Volume] = None
    timings: Dict[str, float] = field(default_factory=dict)
    gate: bool = True
    corrector: str = ""
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def corrected_slices(self) -> List[int]:
        return [s.index for s in self.slices if s.corrected]

    def summary(self) -> Dict[str, Any]:
        n = len(self.slices)
        valid_final = [s.valid_after if s.corrected else s.valid_before for s in self.slices]
        return {
            "slices": n,
            "corrected": len(self.corrected_slices),
            "kept_raw": n - len(self.corrected_slices),
            "valid_raw": int(sum(s.valid_before for s in self.slices)),
            "valid_corrected": int(sum(s.valid_after for s in self.slices)),
            "valid_final": int(sum(valid_final)),
            "validity_rate_raw": float(np.mean([s.valid_before for s in self.slices])) if n else 1.0,
            "validity_rate_final": float(np.mean(valid_final)) if n else 1.0,
        }

    def table_rows(self) -> List[Dict[str, Any]]:
        return [s.table_row() for s in self.slices]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able report (no voxel arrays): summary, settings, per-slice decisions, timings."""
        return {
            "corrector": self.corrector,
            "gate": self.gate,
            "settings": dict(self.settings),
            "summary": self.summary(),
            "slices": [s.to_dict() for s in self.slices],
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
        }

    def with_choices(self, choices: Mapping[int, bool]) -> Volume:
        """The final mask after a user overrides the gate: ``{slice: use corrected?}``.

        Slices not in ``choices`` keep the gate's decision. (The GUI's per-slice accept/reject.)
        """
        out = self.final.array.copy()
        for z, use_corrected in choices.items():
            if not 0 <= int(z) < out.shape[0]:
                raise InputError(f"slice {z} is outside the mask (0..{out.shape[0] - 1})")
            out[int(z)] = (self.corrected if use_corrected else self.raw).array[int(z)]
        return self.final.with_array(out)

    def candidate(self, z: int, k: int = 1) -> np.ndarray:
        """The mask ``(y, x)`` of the ``k``-th candidate of slice ``z`` (``strategy="evidence"``):
        ``k`` indexes the slice's reported ``candidates`` (0 the best, 1 the next best, ...).

        Raises:
            InputError: ``z`` outside the mask, or slice ``z`` has no ``k``-th candidate (a
                valid raw slice has none; the report keeps the best five).
        """
        if not 0 <= int(z) < len(self.slices):
            raise InputError(f"slice {z} is outside the mask (0..{len(self.slices) - 1})")
        ranking = self.slices[int(z)].ranking
        if not 0 <= int(k) < len(ranking):
            raise InputError(f"slice {z} has {len(ranking)} candidates; no candidate {k}")
        return ranking[int(k)].labels.astype(self.final.array.dtype)

    def with_candidate(self, z: int, k: int = 1) -> Volume:
        """The final mask with slice ``z`` replaced by its ``k``-th candidate (:meth:`candidate`)."""
        out = self.final.array.copy()
        out[int(z)] = self.candidate(z, k)
        return self.final.with_array(out)


@dataclass
class SegCorrectResult:
    """Segmentation of an image and its gated correction.

    Attributes:
        segmentation: the segmenter's output (:class:`~.segmenter.SegmenterOutput`).
        correction: the gated correction, or ``None`` when correction was switched off.
        timings: seconds per step (``segment_s``, ``correct_s``, ``total_s``).
        warnings: sentences for the user about the input (reader warnings, an image far from
            what the segmenter was made for: :func:`clinicalai.models.fit.input_warnings`).
    """

    segmentation: Any
    correction: Optional[CorrectionResult]
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    @property
    def raw(self) -> Volume:
        return self.segmentation.labels

    @property
    def final(self) -> Volume:
        return self.correction.final if self.correction is not None else self.segmentation.labels

    def to_dict(self) -> Dict[str, Any]:
        seg = self.segmentation
        return {
            "segmentation": {
                "slice_confidence": [round(float(c), 4) for c in np.asarray(seg.slice_confidence).ravel()],
                "frame": seg.frame.to_dict() if getattr(seg, "frame", None) is not None else None,
                "heart_search": [dict(t) for t in getattr(seg, "heart_search", [])],
                "timings": {k: round(float(v), 4) for k, v in (seg.timings or {}).items()},
                "label_voxels": {int(v): int(n) for v, n in zip(*np.unique(seg.labels.array, return_counts=True)) if v},
            },
            "correction": self.correction.to_dict() if self.correction is not None else None,
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------- helpers
def _region_candidates(raw: np.ndarray, proposal: np.ndarray) -> List[np.ndarray]:
    """Connected regions (8-connectivity) where ``proposal`` disagrees with ``raw``, smallest
    first: one set per (raw label -> proposed label) change, then the whole disagreement's
    components (a fix may need, e.g., a hole filled with two labels at once)."""
    diff = raw != proposal
    regions: List[np.ndarray] = []
    for a in np.unique(raw[diff]):
        for b in np.unique(proposal[diff & (raw == a)]):
            lab, n = ndimage.label(diff & (raw == a) & (proposal == b), structure=_EIGHT)
            regions.extend(lab == i for i in range(1, n + 1))
    lab, n = ndimage.label(diff, structure=_EIGHT)
    regions.extend(lab == i for i in range(1, n + 1))
    regions.sort(key=lambda r: int(r.sum()))
    return regions


def repair_slice(
    raw: np.ndarray,
    proposal: np.ndarray,
    values: Mapping[str, int],
    min_agreement: float = MIN_AGREEMENT,
    max_checks: int = MAX_REPAIR_CHECKS,
) -> Tuple[np.ndarray, SliceValidity]:
    """The smallest use of ``proposal`` that makes the ``(y, x)`` label slice ``raw`` valid.

    Greedy, smallest region first (:func:`_region_candidates`): a region of the proposal is
    taken when it removes at least one failed criterion of :func:`~.validity.check_slice`
    without adding another, erases no structure of ``raw``, and keeps the mean Dice with
    ``raw`` at or above ``min_agreement``; passes repeat until the slice is valid or nothing
    more helps. Why not the whole proposal: on phantoms, the network's smoothing of correct
    boundaries was what turned good slices into worse ones, while the repairs that matter
    (a hole filled, a stray blob or speck removed, a swapped patch relabelled) are local.

    Returns ``(repaired slice, its validity)``; the slice equals ``raw`` where nothing helped.
    """
    labels = [int(v) for v in values.values()]
    current = np.array(raw, copy=True)
    validity = check_slice(current, values)
    present = [v for v in labels if np.any(raw == v)]
    checks = 0
    regions = _region_candidates(np.asarray(raw), np.asarray(proposal))
    improved = True
    while improved and not validity.valid and checks < max_checks:
        improved = False
        for region in regions:
            if checks >= max_checks or validity.valid:
                break
            if np.array_equal(current[region], proposal[region]):
                continue
            trial = current.copy()
            trial[region] = proposal[region]
            if any(not np.any(trial == v) for v in present):
                continue
            if label_dice(trial, raw, labels) < min_agreement:
                continue
            checks += 1
            after = check_slice(trial, values)
            if set(after.failed) < set(validity.failed):
                current, validity, improved = trial, after, True
    return current, validity


def gate_slice(
    before: SliceValidity,
    after: SliceValidity,
    dice: float,
    raw_empty: bool,
    corrected_empty: bool,
    confidence: Optional[float] = None,
    confidence_threshold: Optional[float] = None,
    min_agreement: float = MIN_AGREEMENT,
) -> Tuple[str, str]:
    """``(decision, reason)`` for one slice whose proposed correction has validity ``after`` and
    mean Dice ``dice`` with the raw slice; see the module docstring for the rule."""
    if before.valid:
        return KEPT_RAW, "raw mask is anatomically valid"
    failed = ", ".join(before.failed)
    if confidence_threshold is not None and confidence is not None and confidence >= confidence_threshold:
        return KEPT_RAW, f"segmenter confident ({confidence:.3f} >= {confidence_threshold:.3f}); raw kept although invalid ({failed})"
    if corrected_empty and not raw_empty:
        return KEPT_RAW, "correction erased every structure of the slice"
    if not after.valid:
        return KEPT_RAW, f"no correction within agreement makes it valid ({', '.join(after.failed)} still fail)"
    if dice < min_agreement:
        return KEPT_RAW, f"correction redraws the slice (Dice with raw {dice:.2f} < {min_agreement:.2f})"
    return CORRECTED, f"raw invalid ({failed}); correction valid"


def _evidence_decision(before: SliceValidity, ranking: Sequence[Any], confidence: Optional[float],
                       confidence_threshold: Optional[float], review: bool = False,
                       evidence: str = "the evidence") -> Tuple[str, str]:
    """``(decision, reason)`` of ``strategy="evidence"`` for an invalid slice: its best valid
    candidate, unless the segmenter is confident in the raw slice or ``review``
    (:func:`~.candidates.needs_review`: the candidate is offered, the raw slice kept);
    ``evidence`` names what scored the candidates (:attr:`~.candidates.Evidence.kind`)."""
    failed = ", ".join(before.failed)
    if confidence_threshold is not None and confidence is not None and confidence >= confidence_threshold:
        return KEPT_RAW, f"segmenter confident ({confidence:.3f} >= {confidence_threshold:.3f}); raw kept although invalid ({failed})"
    best = ranking[0]
    if not best.validity.valid:
        return KEPT_RAW, f"no valid candidate among {len(ranking)} ({', '.join(best.validity.failed)} still fail)"
    runner = next((c for c in ranking[1:] if c.validity.valid), None)
    versus = f"; next: {runner.source} {runner.score:.3f}" if runner is not None else ""
    if review:
        return KEPT_RAW, (f"raw invalid ({failed}); for review: the best valid candidate, {best.source}, "
                          f"redraws the slice (Dice with raw {best.agreement:.3f}); judged by {evidence}, nothing "
                          f"supports it more than the raw mask (score {best.score:.3f}{versus}); offered, not applied")
    return CORRECTED, f"raw invalid ({failed}); {best.source} chosen by {evidence} (score {best.score:.3f}{versus})"


def _check_mask(mask: Volume, allowed: Sequence[int], corrector_name: str, names: Mapping[int, str]) -> np.ndarray:
    if not isinstance(mask, Volume):
        raise InputError("the mask must be a Volume")
    arr = mask.array
    if arr.size == 0:
        raise InputError("the mask has no voxels")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"the mask has {int(np.count_nonzero(~np.isfinite(arr)))} voxels that are NaN or infinite")
        if not np.all(arr == np.round(arr)):
            raise InputError(f"the mask holds non-integer values; a label mask is needed ({cardiac_mask_hint()})")
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise InputError(f"the mask has voxel type {arr.dtype}; a label mask of integers is needed")
    found = set(int(v) for v in np.unique(arr))
    unknown = sorted(found - {0} - set(int(v) for v in allowed))
    if unknown:
        known = ", ".join(f"{names[v]}={v}" for v in allowed)
        raise InputError(
            f"the mask has label value(s) {unknown} that the corrector {corrector_name} does not know "
            f"(its labels: {known}); relabel the mask or use a corrector trained for these labels"
        )
    return arr.astype(np.int64)


def _gate_values(corrector) -> Dict[str, int]:
    try:
        return cardiac_values_from_labels([{"name": lab.name, "value": lab.value} for lab in corrector.card.labels])
    except KeyError as exc:
        raise ModelError(
            f"the corrector {corrector.card.name} has no {exc.args[0]} label; the anatomical gate needs "
            f"{', '.join(CARDIAC_NAMES[:-1])} and {CARDIAC_NAMES[-1]} labels") from None


# ---------------------------------------------------------------------------- workflows
def correct_mask(
    mask: Volume,
    corrector: Any,
    image: Optional[Volume] = None,
    gate: bool = True,
    confidence: Optional[Sequence[float]] = None,
    confidence_threshold: Optional[float] = None,
    min_agreement: float = MIN_AGREEMENT,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    strategy: str = "gate",
    probabilities: Optional[np.ndarray] = None,
    context_corrector: Optional[Any] = None,
    latent_decodes: int = LATENT_DECODES,
    seed: int = 0,
    latent_steps: int = LATENT_STEPS,
) -> CorrectionResult:
    """Correct a label mask made by any tool, slice by slice, with the anatomical gate.

    Args:
        mask: label volume ``(z, y, x)`` (values of the corrector's card: 1 RV, 2 MYO, 3 LV);
            slices along z are short-axis slices.
        corrector: :class:`~clinicalai.models.LoadedModel` of a ``mask-correction`` card
            (torch backend; 4 channels, or 12 with neighbouring slices).
        image: optional image the mask was drawn on; must share the mask's grid exactly. The
            correctors read masks only; with ``strategy="evidence"`` and no ``probabilities``
            the image is evidence: an intensity model per label fitted under the mask's
            interior scores the candidates and refines them (:mod:`.candidates`).
        gate: gate the correction (default); ``False`` applies it to every slice (the study).
        confidence: optional per-slice segmenter confidence ``(z,)`` in [0, 1].
        confidence_threshold: never change a slice whose ``confidence`` reaches this.
        min_agreement: smallest mean Dice between raw and corrected slice for a correction to
            be accepted (``strategy="gate"``).
        strategy: ``"gate"`` (the default: the smallest repair from the network's output that
            agrees with the raw slice) or ``"evidence"``: for an invalid slice, the valid
            candidate the evidence supports best (:mod:`.candidates`; network output, smallest
            repair, topological repairs), whatever its agreement with the raw slice.
        probabilities: the segmenter's softmax ``(C, z, y, x)`` on the mask's grid (channel 0
            background, then the card's labels in order): the evidence of ``"evidence"``;
            without it, agreement with the raw slice, the ``image`` and the valid neighbouring slices.
        context_corrector: with ``"evidence"``, a second corrector (the context NVAE, which
            sees the previous, current and next slice) whose output competes as one more
            source, "context NVAE", judged by the same evidence.
        latent_decodes, seed, latent_steps: with ``"evidence"``, the latent-space search
            (:mod:`.latent`): posterior draws per invalid slice (0: none), their noise seed (same
            seed, same result), Adam steps optimising its code towards the evidence (0: off).

    Returns:
        :class:`CorrectionResult` (volumes on ``mask``'s grid, per-slice decisions, timings).

    Raises:
        InputError: NaN / non-integer mask, label values unknown to the corrector, image on
            another grid, confidence of the wrong length.
        ModelError: not a mask corrector, or labels the gate cannot judge.
        Cancelled: ``cancel`` was set.
    """
    t_start = time.perf_counter()
    check_corrector(corrector)
    arr, confidence = _check_inputs(mask, corrector, image, confidence)
    module = corrector.torch_module("mask correction")
    settings = GateSettings.of(corrector, gate, confidence_threshold, min_agreement, strategy)
    n_classes = len(settings.values) + 1
    if probabilities is not None and tuple(np.shape(probabilities)) != (n_classes,) + arr.shape:
        raise InputError(f"segmenter probabilities have shape {tuple(np.shape(probabilities))}, expected "
                         f"{(n_classes,) + arr.shape} (background + {len(settings.values)} labels on the mask's grid)")
    timings: Dict[str, float] = {}
    network_arr = _network_correction(arr, mask, corrector, module, timings, progress, cancel)
    sources, latent = _evidence_sources(arr, mask, corrector, module, settings, probabilities, context_corrector,
                                        latent_decodes, seed, timings, cancel, latent_steps)
    t = time.perf_counter()  # the gate, judged on the input grid
    report(progress, 0.85, "judging anatomical validity")
    shape = _shape_scorer(arr, mask, corrector, module) if settings.strategy == "evidence" and probabilities is None \
        and image is not None and SHAPE_WEIGHT > 0 else None
    corrected_arr, final_arr, decisions = _judge_all(arr, network_arr, settings, confidence, probabilities, sources,
                                                     latent, cancel, image, shape)
    timings["gate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    report(progress, 1.0, f"{sum(d.corrected for d in decisions)} of {arr.shape[0]} slices corrected")
    return _correction_result(mask, arr, network_arr, corrected_arr, final_arr, decisions, timings, corrector.card,
                              settings)


def _judge_all(arr: np.ndarray, network_arr: np.ndarray, settings: "GateSettings", confidence: Optional[np.ndarray],
               probabilities: Optional[np.ndarray], sources: Mapping[str, np.ndarray],
               latent: Mapping[int, Sequence[Tuple[str, np.ndarray]]], cancel: Optional[CancelToken],
               image: Optional[Volume] = None, shape: Optional[Callable[[np.ndarray], np.ndarray]] = None,
               ) -> Tuple[np.ndarray, np.ndarray, List[SliceDecision]]:
    """:func:`judge_slice` on every slice of ``arr`` ``(z, y, x)``: ``(corrected, final, decisions)``.

    Slices are judged from the first; with ``"evidence"`` and no probabilities each sees the
    image slice (with its :class:`~.candidates.IntensityModel`, fitted once under ``arr``) and
    its valid neighbours: the previous slice's final mask and the next slice's raw mask (final
    too: a valid raw slice is kept), and ``shape``, the corrector's plausibility of a candidate
    (:func:`_shape_scorer`)."""
    evidence = settings.gate and settings.strategy == "evidence" and probabilities is None
    model = None
    if evidence and image is not None:
        model = IntensityModel.fit(np.asarray(image.array, np.float32), arr, settings.values)
    corrected_arr = network_arr.copy()
    final_arr = arr.astype(network_arr.dtype)
    decisions: List[SliceDecision] = []
    valid_raw = [check_slice(arr[z], settings.gate_values).valid for z in range(arr.shape[0])]
    for z in range(arr.shape[0]):
        check_cancel(cancel)
        context = None
        if evidence and not valid_raw[z]:
            previous = z > 0 and (decisions[-1].valid_after if decisions[-1].corrected else valid_raw[z - 1])
            following = z + 1 < arr.shape[0] and valid_raw[z + 1]
            neighbours = ([final_arr[z - 1]] if previous else []) + ([arr[z + 1]] if following else [])
            context = SliceContext(None if model is None else np.asarray(image.array[z], np.float32), model, neighbours,
                                   shape)
        decision, proposal = judge_slice(
            z, arr[z], network_arr[z], settings, None if confidence is None else float(confidence[z]),
            None if probabilities is None else probabilities[:, z],
            {name: a[z] for name, a in sources.items()}, latent.get(z, ()), context)
        corrected_arr[z] = proposal
        if decision.corrected:
            final_arr[z] = proposal
        decisions.append(decision)
    return corrected_arr, final_arr, decisions


def _evidence_sources(arr: np.ndarray, mask: Volume, corrector: Any, module: Any, settings: "GateSettings",
                     probabilities: Optional[np.ndarray], context_corrector: Optional[Any], latent_decodes: int,
                     seed: int, timings: Dict[str, float], cancel: Optional[CancelToken], latent_steps: int = 0,
                     ) -> Tuple[Dict[str, np.ndarray], Dict[int, List[Tuple[str, np.ndarray]]]]:
    """The ``"evidence"`` strategy's extra sources: ``({"context NVAE": (z, y, x)} or {},
    {z: latent decodings}`` of the invalid slices); nothing for other strategies. Fills
    ``context_s`` and ``latent_s``."""
    if settings.strategy != "evidence" or not settings.gate:
        return {}, {}
    sources: Dict[str, np.ndarray] = {}
    if context_corrector is not None:
        check_corrector(context_corrector)
        check_label_match(corrector, context_corrector)
        sources["context NVAE"] = _network_correction(
            arr, mask, context_corrector, context_corrector.torch_module("mask correction"), {}, None, cancel)
    check_cancel(cancel)
    t = time.perf_counter()
    invalid = [z for z in range(arr.shape[0]) if not check_slice(arr[z], settings.gate_values).valid]
    latent = _latent_search(arr, mask, corrector, module, invalid, probabilities, latent_decodes, seed, latent_steps)
    timings["latent_s"] = time.perf_counter() - t
    return sources, latent


@dataclass(frozen=True)
class GateSettings:
    """How :func:`correct_mask` judges each slice (see its arguments), and the corrector's
    label values: ``values`` in card order, ``gate_values`` by structure name
    (:meth:`of` builds them from a corrector)."""

    gate: bool
    confidence_threshold: Optional[float]
    min_agreement: float
    strategy: str
    values: Tuple[int, ...]
    gate_values: Mapping[str, int]

    @classmethod
    def of(cls, corrector: Any, gate: bool, confidence_threshold: Optional[float], min_agreement: float,
           strategy: str) -> "GateSettings":
        if strategy not in STRATEGIES:
            raise InputError(f"correction strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        return cls(gate, confidence_threshold, min_agreement, strategy,
                   tuple(lab.value for lab in corrector.card.labels), _gate_values(corrector))


def _check_inputs(mask: Volume, corrector: Any, image: Optional[Volume],
                  confidence: Optional[Sequence[float]]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Validate what :func:`correct_mask` was given: ``(mask as int64 (z, y, x), confidence
    as float (z,) or None)``; the labels must be ones the gate can judge."""
    card = corrector.card
    arr = _check_mask(mask, [lab.value for lab in card.labels], card.name, card.label_names())
    _gate_values(corrector)
    if image is not None:
        if not isinstance(image, Volume):
            raise InputError("the image must be a Volume")
        if not image.same_grid(mask, atol=1e-4):
            raise InputError(
                f"the image and the mask are on different grids (image {image.shape}, spacing {image.spacing}; "
                f"mask {mask.shape}, spacing {mask.spacing}); give the image the mask was drawn on")
        image.require_finite("image")
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=float).ravel()
        if confidence.shape[0] != arr.shape[0]:
            raise InputError(f"confidence has {confidence.shape[0]} values for {arr.shape[0]} slices")
    return arr, confidence


def _network_frame(arr: np.ndarray, mask: Volume, card: Any) -> Tuple[np.ndarray, SliceFrame]:
    """``(class indices (z, y, x) in card label order, the network frame)`` of a mask: how
    the corrector network sees it (framed like training)."""
    values = [lab.value for lab in card.labels]
    to_class = np.zeros(max(values) + 1, np.uint8)
    for i, v in enumerate(values):
        to_class[v] = i + 1
    classes = to_class[arr]
    return classes, frame_from_mask(classes, spacing=mask.spacing, out_size=tuple(card.input.size or NETWORK_SIZE))


def _latent_search(arr: np.ndarray, mask: Volume, corrector: Any, module: Any, slices: Sequence[int],
                   probabilities: Optional[np.ndarray], n_decodes: int,
                   seed: int, steps: int = 0) -> Dict[int, List[Tuple[str, np.ndarray]]]:
    """The latent search's decodings (:mod:`.latent`) of each slice in ``slices``, on the
    mask's grid, card label values: ``{z: [(source, (y, x))]}``, ``n_decodes`` draws per slice
    in one batched pass, then the ``steps`` decodings along the optimisation of its code
    (:func:`~.latent.optimised_decodings`); of decodings equal in network space only the first
    is kept. Empty when the corrector exposes no posterior or no slice is asked."""
    if not slices or (n_decodes <= 0 and steps <= 0) or not supports_latent_search(module):
        return {}
    card = corrector.card
    values = [lab.value for lab in card.labels]
    n_classes = len(values) + 1
    classes, frame = _network_frame(arr, mask, card)
    sel = np.asarray(list(slices), int)
    net = to_network(classes[sel], frame, kind="labels")
    soft = None
    if probabilities is not None:
        # bilinear like the image; outside the image box the background takes what is left
        soft = np.stack([to_network(probabilities[c][sel], frame, kind="image", normalize=False)
                         for c in range(n_classes)])
        soft[0] = np.clip(1.0 - soft[1:].sum(0), 0.0, 1.0)
    names, dec = latent_decodings(module, net, n_classes, soft, n_decodes, seed, corrector.device) \
        if n_decodes > 0 else ([], np.zeros((0, n_classes) + net.shape, np.float32))
    more, opt = optimised_decodings(module, net, n_classes, soft, steps, device=corrector.device)
    names, dec = names + more, np.concatenate([dec, opt])
    # consecutive optimisation steps often decode to the same argmax: only the first of equal
    # decodings of a slice is mapped back (the rest would be dropped as duplicates anyway)
    pairs = _distinct_decodings(dec.argmax(1))
    flat = np.stack([dec[j, :, i] for j, i in pairs], axis=1)  # (C, m, H, W)
    back = from_network(flat, frame, (len(pairs),) + arr.shape[1:], kind="probabilities",
                        num_classes=n_classes).argmax(0)
    labels = np.array([0] + values, dtype=arr.dtype)[back]
    out: Dict[int, List[Tuple[str, np.ndarray]]] = {int(z): [] for z in sel}
    for (j, i), lab in zip(pairs, labels):
        out[int(sel[i])].append((names[j], lab))
    return out


def _distinct_decodings(argmax: np.ndarray) -> List[Tuple[int, int]]:
    """``[(decode j, slice i)]`` of the first of each set of equal decodings of a slice, from the
    network-space argmax ``(K, n, H, W)``, in decode order."""
    keep: List[Tuple[int, int]] = []
    for i in range(argmax.shape[1]):
        seen: List[np.ndarray] = []
        for j in range(argmax.shape[0]):
            if not any(np.array_equal(argmax[j, i], s) for s in seen):
                seen.append(argmax[j, i])
                keep.append((j, i))
    return keep


def _shape_scorer(arr: np.ndarray, mask: Volume, corrector: Any,
                  module: Any) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """The shape term of the evidence without probabilities (:attr:`.candidates.SliceContext.shape`):
    ``labels (k, y, x)`` (card values, the mask's grid) -> ``(k,)``, the mean log-probability of
    each slice's own labels under the corrector's reconstruction of it, in network space (the
    volume's frame), over the pixels the slice or the reconstruction call heart. A single-slice
    corrector only (a context corrector would need the neighbours of every candidate): ``None``."""
    import torch

    card = corrector.card
    values = [lab.value for lab in card.labels]
    n_classes = len(values) + 1
    if is_context_model(int(card.input.channels or n_classes), n_classes):
        return None
    _, frame = _network_frame(arr, mask, card)
    to_class = np.zeros(max(values) + 1, np.int64)
    to_class[values] = np.arange(1, n_classes)

    def score(labels: np.ndarray) -> np.ndarray:
        net = to_network(to_class[labels], frame, kind="labels").astype(np.int64)
        with torch.inference_mode():
            x = torch.from_numpy(one_hot_stack(net, n_classes, False)).to(corrector.device)
            log_p = torch.log_softmax(module(x).float(), dim=1).cpu().numpy()
        own = np.take_along_axis(log_p, net[:, None], axis=1)[:, 0]
        region = (net > 0) | (log_p.argmax(1) > 0)
        return np.array([own[i][region[i]].mean() if region[i].any() else 0.0 for i in range(len(net))])

    return score


def _network_correction(arr: np.ndarray, mask: Volume, corrector: Any, module: Any, timings: Dict[str, float],
                        progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> np.ndarray:
    """The corrector network's output on every slice of ``arr`` ``(z, y, x)`` (card label
    values), back on the mask's grid; fills ``preprocess_s``, ``network_s``, ``postprocess_s``.

    In network space a mask is class indices in the card's label order, framed like training.
    """
    card = corrector.card
    values = [lab.value for lab in card.labels]
    n_classes = len(values) + 1
    t = time.perf_counter()
    classes, frame = _network_frame(arr, mask, card)
    net = to_network(classes, frame, kind="labels")
    timings["preprocess_s"] = time.perf_counter() - t
    check_cancel(cancel)
    t = time.perf_counter()
    if classes.any():
        probs = correct_slices(module, net, n_classes, device=corrector.device,
                               progress=scaled(progress, 0.0, 0.8), cancel=cancel)
    else:  # nothing drawn: nothing to correct, and an empty slice is valid
        probs = np.zeros((n_classes,) + net.shape, np.float32)
        probs[0] = 1.0
    timings["network_s"] = time.perf_counter() - t
    check_cancel(cancel)
    t = time.perf_counter()
    back = from_network(probs, frame, arr.shape, kind="probabilities", num_classes=n_classes).argmax(0)
    to_value = np.array([0] + values, dtype=np.int64)
    out = to_value[back].astype(mask.array.dtype if np.issubdtype(mask.array.dtype, np.integer) else np.uint8)
    timings["postprocess_s"] = time.perf_counter() - t
    return out


def propose_slice(raw: np.ndarray, network: np.ndarray, settings: GateSettings,
                  probabilities: Optional[np.ndarray] = None,
                  raw_validity: Optional[SliceValidity] = None,
                  sources: Optional[Mapping[str, np.ndarray]] = None,
                  latent: Sequence[Tuple[str, np.ndarray]] = (),
                  context: Optional[SliceContext] = None) -> Tuple[np.ndarray, SliceValidity, List[Candidate]]:
    """The correction proposed for one ``(y, x)`` slice: ``(proposal, its validity, ranking)``.

    A valid raw slice (or gating off) gets the network's output; an invalid one its smallest
    repair when that is valid, and with ``strategy="evidence"`` the best valid candidate of
    :func:`~.candidates.candidates_for_slice` (``ranking``, best first; empty otherwise).
    ``probabilities``: the segmenter's softmax ``(C, y, x)`` for the evidence; ``raw_validity``:
    :func:`~.validity.check_slice` of ``raw`` when the caller has it already; ``sources``:
    more proposals by name (the context NVAE's slice), repaired like the network's;
    ``latent``: the latent search's decodings ``[(name, (y, x))]``, of which the valid ones compete;
    ``context``: without probabilities, the image slice, its intensity model and the valid
    neighbouring slices (:class:`~.candidates.SliceContext`), more evidence than the raw mask.
    """
    proposal, after = network, check_slice(network, settings.gate_values)
    ranking: List[Candidate] = []
    if raw_validity is None:
        raw_validity = check_slice(raw, settings.gate_values)
    if not settings.gate or raw_validity.valid:
        return proposal, after, ranking
    repaired, repaired_validity = repair_slice(raw, network, settings.gate_values, settings.min_agreement)
    if repaired_validity.valid:
        proposal, after = repaired.astype(network.dtype), repaired_validity
    if settings.strategy == "evidence":
        proposals = {"network": network}
        if repaired_validity.valid:
            proposals["smallest repair"] = repaired
        proposals.update(sources or {})
        evidence = Evidence(list(settings.values), probabilities, raw, context or SliceContext())
        ranking = candidates_for_slice(raw, proposals, settings.gate_values, evidence,
                                       extra=valid_decodings(latent, settings.gate_values, raw))
        if ranking and ranking[0].validity.valid:
            proposal, after = ranking[0].labels.astype(network.dtype), ranking[0].validity
    return proposal, after, ranking


def judge_slice(index: int, raw: np.ndarray, network: np.ndarray, settings: GateSettings,
                confidence: Optional[float] = None,
                probabilities: Optional[np.ndarray] = None,
                sources: Optional[Mapping[str, np.ndarray]] = None,
                latent: Sequence[Tuple[str, np.ndarray]] = (),
                context: Optional[SliceContext] = None) -> Tuple[SliceDecision, np.ndarray]:
    """The gate's decision on slice ``index`` and the correction it judged (:func:`propose_slice`)."""
    before = check_slice(raw, settings.gate_values)
    proposal, after, ranking = propose_slice(raw, network, settings, probabilities, before, sources, latent, context)
    dice = label_dice(raw, proposal, settings.values)
    changed = int(np.count_nonzero(raw != proposal))
    if settings.gate and ranking:
        evidence = Evidence(settings.values, probabilities, raw, context or SliceContext())
        review = ranking[0].validity.valid and needs_review(ranking[0], evidence)
        decision, reason = _evidence_decision(before, ranking, confidence, settings.confidence_threshold, review,
                                              evidence.kind)
    elif settings.gate:
        decision, reason = gate_slice(before, after, dice, not raw.any(), not proposal.any(),
                                      confidence, settings.confidence_threshold, settings.min_agreement)
        if decision == CORRECTED:
            reason += f" ({changed} pixels changed, Dice with raw {dice:.2f})"
    else:
        decision, reason = CORRECTED, "gating off: correction applied to every slice"
    best = ranking[0] if ranking and ranking[0].validity.valid else None
    return SliceDecision(index, before.valid, after.valid, dict(before.criteria), dict(after.criteria),
                         dice, decision, reason, confidence, changed,
                         source=best.source if best else None, score=best.score if best else None,
                         candidates=[c.to_dict() for c in ranking[:5]], ranking=list(ranking[:5])), proposal


def _correction_result(mask: Volume, arr: np.ndarray, network_arr: np.ndarray, corrected_arr: np.ndarray,
                       final_arr: np.ndarray, decisions: List[SliceDecision], timings: Dict[str, float], card: Any,
                       settings: GateSettings) -> CorrectionResult:
    """The volumes on ``mask``'s grid (segments from the card where the mask has none) and the report."""
    raw_vol = mask.with_array(arr.astype(corrected_arr.dtype), modality="SEG", units="label")
    raw_vol.metadata.setdefault("segments", segments_from_card(card, terminology=False))
    n_classes = len(settings.values) + 1
    return CorrectionResult(
        raw=raw_vol, corrected=raw_vol.with_array(corrected_arr), final=raw_vol.with_array(final_arr),
        slices=decisions, network=raw_vol.with_array(network_arr), timings=timings, gate=settings.gate,
        corrector=card.name,
        settings={"min_agreement": settings.min_agreement, "confidence_threshold": settings.confidence_threshold,
                  "strategy": settings.strategy, "context_slices": bool(card.input.channels == 3 * n_classes),
                  "criteria": list(CRITERIA)},
    )


def check_label_match(segmenter: Any, corrector: Any) -> None:
    """:class:`ModelError` unless segmenter and corrector cards list the same labels (name, value)."""
    seg = sorted((lab.value, lab.name.upper()) for lab in segmenter.card.labels)
    cor = sorted((lab.value, lab.name.upper()) for lab in corrector.card.labels)
    if seg != cor:
        fmt = lambda pairs: ", ".join(f"{n}={v}" for v, n in pairs)  # noqa: E731
        raise ModelError(
            f"the segmenter {segmenter.card.name} labels ({fmt(seg)}) do not match the corrector "
            f"{corrector.card.name} labels ({fmt(cor)}); use models trained for the same structures")


def keep_largest_for_run(card: Any, override: Optional[bool], strategy: str, correcting: bool) -> bool:
    """Whether a SegCorrect run keeps only the largest 3D component of each structure of the raw
    mask: ``override`` when given, else the segmenter card's setting
    (:func:`~.segmenter.keeps_largest_component`), except that the evidence strategy with a
    corrector leaves it off. That strategy has the same repair per slice among its candidates and
    judges it by the segmenter's probabilities, while the step, run first, can drop the true piece
    of a structure for good (held-out family: 0.672 with it off, 0.667 on; docs/segmentation.md)."""
    if override is None and strategy == "evidence" and correcting:
        return False
    return keeps_largest_component(card, override)


def run_segcorrect(
    image: Volume,
    segmenter: Any,
    corrector: Optional[Any] = None,
    gate: bool = True,
    confidence_threshold: Optional[float] = None,
    min_agreement: float = MIN_AGREEMENT,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    strategy: str = "gate",
    context_corrector: Optional[Any] = None,
    fit_warnings: Optional[Sequence[str]] = None,
    keep_largest: Optional[bool] = None,
) -> SegCorrectResult:
    """Segment a short-axis stack and correct the mask with the gate (``corrector=None``: no correction).

    ``strategy="evidence"`` judges the candidates of each invalid slice by the segmenter's own
    probabilities (:func:`correct_mask`), with ``context_corrector``'s output as one more source.

    Args:
        image: MR volume ``(z, y, x)``.
        segmenter: segmentation :class:`~clinicalai.models.LoadedModel` (2D, labels RV/MYO/LV).
        corrector: mask-correction model with the same labels, or ``None``.
        gate, confidence_threshold, min_agreement: as :func:`correct_mask` (the segmenter's
            ``slice_confidence`` is the confidence).
        fit_warnings: how ``image`` is far from what ``segmenter`` was made for, as the caller
            already found it (the panels check, and ask, before a run); ``None``: checked here.
        keep_largest: largest 3D component per label on the raw mask, before correction
            (:func:`~.segmenter.segment_volume`; ``None``: :func:`keep_largest_for_run`).

    Raises:
        InputError / ModelError: as :func:`~.segmenter.segment_volume` and :func:`correct_mask`,
            and when the two models' labels differ (checked before any computation).
    """
    t0 = time.perf_counter()
    if corrector is not None:
        check_corrector(corrector)
        check_label_match(segmenter, corrector)
    keep_largest = keep_largest_for_run(segmenter.card, keep_largest, strategy, corrector is not None)
    seg = segment_volume(image, segmenter, progress=scaled(progress, 0.0, 0.6 if corrector else 1.0), cancel=cancel,
                         keep_largest=keep_largest)
    timings = {"segment_s": time.perf_counter() - t0}
    correction = None
    if corrector is not None:
        check_cancel(cancel)
        t = time.perf_counter()
        correction = correct_mask(seg.labels, corrector, image=image, gate=gate, confidence=seg.slice_confidence,
                                  confidence_threshold=confidence_threshold, min_agreement=min_agreement,
                                  progress=scaled(progress, 0.6, 1.0), cancel=cancel, strategy=strategy,
                                  probabilities=seg.probabilities if strategy == "evidence" else None,
                                  context_corrector=context_corrector)
        timings["correct_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    report(progress, 1.0, "done")
    if fit_warnings is None:
        warnings = input_warnings(image, [segmenter.card])
    else:
        warnings = input_warnings(image) + [str(w) for w in fit_warnings]  # the reader's, then the caller's
    for unsure in (low_confidence_warning(seg.slice_confidence, segmenter.card),
                   unconfirmed_heart_warning(getattr(seg, "heart_search", []))):
        if unsure:
            warnings.append(unsure)
    return SegCorrectResult(seg, correction, timings, warnings=warnings)

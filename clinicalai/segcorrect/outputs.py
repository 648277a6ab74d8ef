"""What the segmenters give back, shared by the 2D (:mod:`.segmenter`) and 3D (:mod:`.ct`) paths.

:class:`SegmenterOutput` (a segmentation on the input grid), :class:`TrainResult` (a trained
network and its card), and the two steps both paths end with: :func:`softmax` of the
network's logits and :func:`slice_confidence` of the probabilities. This module sits below
both so that neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..models.card import segments_from_card
from ..volume import Volume
from .labels import UNSET_COLOR
from .preprocess import SliceFrame


@dataclass
class TrainResult:
    """What :func:`~.segmenter.train_segmenter` (and :func:`~.ct.train_ct_segmenter`) give back.

    Attributes:
        module: the network with the best validation weights (eval mode).
        card: the model card (dict) written beside the weights.
        best_val_dice: mean foreground Dice on the validation slices at the best epoch.
        history: per epoch ``{"epoch", "loss", "val_dice"}``.
        path: the saved ``.pt`` file (``None`` when not saved).
    """

    module: Any
    card: Dict[str, Any]
    best_val_dice: float
    history: List[Dict[str, float]] = field(default_factory=list)
    path: Optional[Path] = None
    seconds: float = 0.0

#: the two-pass segmenter trusts a crop once its fine pass labels this fraction of the coarse
#: component the crop was set on; the heart scores 0.59-0.99 on held-out seeds 100-109,
#: 200-209 and 300-319 with two segmenters, a structure beside it 0.02 (docs/heldout.md,
#: "Where is the heart")
CONFIRMED_FRACTION = 0.5


@dataclass
class SegmenterOutput:
    """A segmentation on the input grid.

    Attributes:
        labels: uint8 label volume on the input grid (modality ``SEG``, ``metadata["segments"]``
            from the card).
        probabilities: float32 ``(C, z, y, x)`` softmax on the input grid (C = labels + 1).
        slice_confidence: ``(z,)`` mean max-probability over the predicted foreground of each
            slice (over the crop box when a slice has no foreground).
        frame: the crop box of the second pass (``None`` for the 3D path).
        timings: seconds per step.
        heart_search: one entry per crop the fine pass ran on (2D two-pass path; empty
            otherwise): ``voxels`` of the coarse component it was set on, the fraction of them
            the fine pass ``confirmed``, whether it was ``chosen``, and ``refined: true`` for a
            crop set on an earlier fine pass's foreground (:func:`~.segmenter.find_heart`).
    """

    labels: Volume
    probabilities: np.ndarray
    slice_confidence: np.ndarray
    frame: Optional[SliceFrame]
    timings: Dict[str, float] = field(default_factory=dict)
    heart_search: List[Dict[str, Any]] = field(default_factory=list)


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax of float ``logits`` along ``axis`` (the class axis), in place on a shifted copy.

    ``(N, C, ...)`` network outputs use ``axis=1``; one volume's ``(C, z, y, x)`` uses ``axis=0``.
    """
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def slice_confidence(max_probability: np.ndarray, foreground: np.ndarray,
                     fallback: Optional[np.ndarray] = None) -> np.ndarray:
    """Per slice ``(z,)`` float32: mean of ``max_probability`` ``(z, y, x)`` over the slice's
    ``foreground`` ``(z, y, x)``, or over ``fallback`` ``(y, x)`` (default the whole slice) where
    a slice has no foreground: how sure the network was of what it drew."""
    conf = np.empty(max_probability.shape[0], np.float32)
    for k in range(max_probability.shape[0]):
        if foreground[k].any():
            conf[k] = float(max_probability[k][foreground[k]].mean())
        else:
            conf[k] = float(max_probability[k].mean() if fallback is None else max_probability[k][fallback].mean())
    return conf


def low_confidence_warning(slice_confidence: np.ndarray, card: Any) -> Optional[str]:
    """A sentence when the segmenter was unsure of the whole image: the median of its per-slice
    confidence ``(z,)`` (:func:`slice_confidence`) below the card's ``input.min_median_confidence``;
    ``None`` otherwise or when the card sets no such limit.

    Why the median over slices: an image the network was made for has a few hard slices (apex,
    base) but is confident on most; an image of other anatomy is unsure on most slices. A
    softmax-confidence check is the classic baseline for inputs unlike the training data
    (Hendrycks & Gimpel, ICLR 2017); it is a warning, never a refusal."""
    limit = card.input.min_median_confidence
    conf = np.asarray(slice_confidence, dtype=float).ravel()
    if limit is None or conf.size == 0:
        return None
    median = float(np.median(conf))
    if median >= limit:
        return None
    return (f"the segmenter is unsure of this image (median slice confidence {median:.2f}, below {limit:.2f} "
            f"where its validation images lie): it may not be the kind of image {card.name} was made for; check the result")


def crop_confirmed(found: int, voxels: int) -> bool:
    """The two-pass search's rule, on exact voxel counts: a crop is confirmed when its fine pass
    labels at least :data:`CONFIRMED_FRACTION` of the ``voxels`` of the coarse component it was
    set on (``found`` of them)."""
    return found >= CONFIRMED_FRACTION * voxels


def unconfirmed_heart_warning(heart_search: List[Dict[str, Any]]) -> Optional[str]:
    """A sentence when no crop of the two-pass search was confirmed by its fine pass
    (:attr:`SegmenterOutput.heart_search`): the coarse pass may have located something other
    than the heart, so the result may miss it; ``None`` when a crop was confirmed or no search ran.
    Decided on each record's exact counts (``found``, ``voxels``), as the search decided; the
    rounded ``confirmed`` fraction only goes into the sentence."""
    if not heart_search or any(crop_confirmed(t["found"], t["voxels"]) for t in heart_search):
        return None
    best = max(t["confirmed"] for t in heart_search)
    return (f"the segmenter could not confirm where the heart is: its fine pass labels at most {best:.0%} of what "
            f"its coarse pass found ({len(heart_search)} place(s) tried); the heart may be missed or cut; check the result")


def card_segments(card: Any) -> List[Dict[str, Any]]:
    """``Volume.metadata["segments"]`` of a segmenter's output: the card's labels, grey
    (:data:`~.labels.UNSET_COLOR`) where the card gives no colour, no terminology."""
    return segments_from_card(card, default_color=UNSET_COLOR, terminology=False)


__all__ = ["CONFIRMED_FRACTION", "SegmenterOutput", "TrainResult", "card_segments", "crop_confirmed", "low_confidence_warning", "slice_confidence", "softmax",
           "unconfirmed_heart_warning"]

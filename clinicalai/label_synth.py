"""Domain-randomised images from label maps (the SynthSeg idea, Billot et al., MedIA 2023).

A network trained on one phantom generator's images learns that generator's intensities:
its blood / myocardium / body contrast, its body and lungs around the heart. SynthSeg trains
on images drawn afresh from the label maps instead: every structure gets a random mean
intensity and texture in every sample (a Gaussian mixture over the labels), so the only cue
that stays constant is the shape. :class:`RandLabelSynthd` does this for one 2D training
slice (channel-first ``(1, H, W)`` image in ``[0, 1]`` and its label map, values 0..3):

- **heart labels** (RV, MYO, LV): a random blood intensity for the LV, the RV within +-15 % of
  it, and a myocardium always darker than the blood (bright-blood cine never inverts that),
  but brighter or darker than the tissue around it at random;
- **background structures**: the phantom has no labels for body, fat, lungs or organs, so the
  background of the (already deformed) real image is split into 2-6 intensity classes by
  quantiles of its smoothed intensity, and each class gets its own random intensity: body and
  lungs keep their shapes but lose their contrast; with ``nobody_prob`` the whole background
  is one dark class (a heart in air, no body);
- **texture**: Gaussian noise per class (the later MONAI blur and noise transforms add
  partial volume, bias field and acquisition noise);
- **thick-slice partial volume**: with ``pv_prob`` the slice is blended with a copy of itself
  zoomed about the heart (a thick slice averages a larger or smaller cut of the ventricles),
  so edges, and thin myocardium in particular, get the mixed intensities of oblique, thick
  slices.

The label map is never changed; the image is renormalised to its 1st-99th percentile (the
rule inference uses). Written by hand because MONAI has no label-to-intensity synthesis;
everything else of the ``synth`` preset (deformation, bias, blur, noise, contrast) is MONAI's
(:func:`clinicalai.augment.make_augmenter`).
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .models.layout import normalize_intensity

#: label values of the heart (1 RV, 2 MYO, 3 LV: the ACDC convention of clinicalai.segcorrect.labels)
_RV, _MYO, _LV = 1, 2, 3


class RandLabelSynthd:
    """Replace the image with one synthesised from the label map, with probability ``prob``.

    Args:
        image_key, label_key: entries of the sample dict (channel-first, ``(1, H, W)``).
        prob: chance of a synthetic image (otherwise the real image passes unchanged).
        background_classes: ``(lo, hi)`` number of background intensity classes.
        nobody_prob: chance that the background is one dark class (no body around the heart).
        blood: ``(lo, hi)`` LV blood intensity (normalised units).
        myo_ratio: ``(lo, hi)`` myocardium / blood intensity (below 1: bright-blood cine).
        texture: ``(lo, hi)`` per-class noise std.
        pv_prob, pv_zoom, pv_weight: thick-slice partial volume (chance, zoom range of the
            blended copy, its weight range).

    Every draw is made whether or not it is used, so the random stream does not depend on
    the data (as in :class:`clinicalai.augment.RandDropContextd`).
    """

    def __init__(self, image_key: str, label_key: str, prob: float, *,
                 background_classes: Sequence[int] = (2, 6), nobody_prob: float = 0.3,
                 blood: Sequence[float] = (0.55, 1.0), myo_ratio: Sequence[float] = (0.08, 0.6),
                 texture: Sequence[float] = (0.0, 0.08), pv_prob: float = 0.3,
                 pv_zoom: Sequence[float] = (0.8, 1.2), pv_weight: Sequence[float] = (0.15, 0.5)) -> None:
        self.image_key, self.label_key, self.prob = image_key, label_key, float(prob)
        self.background_classes = (int(background_classes[0]), int(background_classes[1]))
        self.nobody_prob = float(nobody_prob)
        self.blood, self.myo_ratio, self.texture = _pair(blood), _pair(myo_ratio), _pair(texture)
        self.pv_prob, self.pv_zoom, self.pv_weight = float(pv_prob), _pair(pv_zoom), _pair(pv_weight)
        self.R = np.random.RandomState()

    def set_random_state(self, seed: Optional[int] = None, state: Optional[np.random.RandomState] = None):
        """MONAI's Randomizable protocol."""
        self.R = state if state is not None else np.random.RandomState(seed)
        return self

    def _draw(self) -> Dict[str, Any]:
        """Every random number one sample needs (fixed count: the stream is data-independent)."""
        R, n_max = self.R, self.background_classes[1]
        blood = R.uniform(*self.blood)
        return {
            "go": R.rand() < self.prob,
            "n_bg": int(R.randint(self.background_classes[0], n_max + 1)),
            "nobody": R.rand() < self.nobody_prob,
            "heart": {_LV: blood, _RV: blood * R.uniform(0.85, 1.15), _MYO: blood * R.uniform(*self.myo_ratio)},
            "bg": R.uniform(0.0, 1.0, size=n_max),
            "air": R.uniform(0.0, 0.12),
            "texture": R.uniform(*self.texture, size=4 + n_max),
            "noise_seed": int(R.randint(0, 2 ** 31 - 1)),
            "pv": R.rand() < self.pv_prob,
            "pv_zoom": R.uniform(*self.pv_zoom),
            "pv_weight": R.uniform(*self.pv_weight),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        draw = self._draw()
        if not draw["go"] or self.label_key not in d:
            return d
        import torch

        img_in = d[self.image_key]
        image = np.asarray(img_in.detach().cpu() if isinstance(img_in, torch.Tensor) else img_in, np.float32)
        lab_in = d[self.label_key]
        label = np.rint(np.asarray(lab_in.detach().cpu() if isinstance(lab_in, torch.Tensor) else lab_in)).astype(np.int64)
        synth = synthesize_slice(image[0], label[0], draw)
        out = torch.as_tensor(synth[None].astype(np.float32))
        d[self.image_key] = out if isinstance(img_in, torch.Tensor) else out.numpy()
        return d


def synthesize_slice(image: np.ndarray, label: np.ndarray, draw: Mapping[str, Any]) -> np.ndarray:
    """One synthetic slice ``(H, W)`` float32 in ``[0, 1]`` from the real slice ``image`` (whose
    background gives the background classes) and ``label`` (0..3), with the intensities of
    ``draw`` (:meth:`RandLabelSynthd._draw`)."""
    classes = background_classes(image, label, 1 if draw["nobody"] else draw["n_bg"])
    means = np.zeros(4 + len(draw["bg"]), np.float32)
    for value, mean in draw["heart"].items():
        means[value] = mean
    means[4:] = draw["bg"]
    if draw["nobody"]:
        means[4] = draw["air"]
    index = np.where(label > 0, label, 4 + classes)  # one class per pixel: 1..3 heart, 4.. background
    rng = np.random.default_rng(draw["noise_seed"])
    out = means[index] + draw["texture"][index].astype(np.float32) * rng.standard_normal(label.shape).astype(np.float32)
    if draw["pv"]:
        out = (1.0 - draw["pv_weight"]) * out + draw["pv_weight"] * _zoom_about(out, label, draw["pv_zoom"])
    # the cardiac segmenters' input rule (1st-99th percentile -> 0-1, clipped), from the one place it lives
    return normalize_intensity(out, {"kind": "percentile", "lower": 1.0, "upper": 99.0})


def background_classes(image: np.ndarray, label: np.ndarray, n: int) -> np.ndarray:
    """``(H, W)`` int class 0..n-1 of every background pixel (quantiles of the smoothed image
    over the background; heart pixels get 0, they are not used)."""
    if n <= 1:
        return np.zeros(label.shape, np.int64)
    # sigma 1.5 px: classes follow structures (body, lungs, organs), not the noise grains
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.5)
    bg = smooth[label == 0]
    if bg.size == 0:
        return np.zeros(label.shape, np.int64)
    edges = np.quantile(bg, np.linspace(0, 1, n + 1)[1:-1])
    return np.where(label == 0, np.digitize(smooth, edges), 0).astype(np.int64)


def _zoom_about(image: np.ndarray, label: np.ndarray, zoom: float) -> np.ndarray:
    """``image`` zoomed by ``zoom`` about the heart's centroid (the slice centre without one),
    same shape, edge values outside."""
    fg = np.nonzero(label > 0)
    centre = np.array([c.mean() for c in fg]) if len(fg[0]) else (np.array(image.shape) - 1) / 2.0
    # output pixel x samples the input at centre + (x - centre) / zoom
    return ndimage.affine_transform(image, np.full(2, 1.0 / zoom), offset=centre - centre / zoom, order=1, mode="nearest")


def _pair(values: Sequence[float]) -> Tuple[float, float]:
    return float(values[0]), float(values[1])


__all__ = ["RandLabelSynthd", "background_classes", "synthesize_slice"]

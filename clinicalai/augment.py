"""One augmentation factory (MONAI dictionary transforms) for every trainer.

Demo models trained on one phantom generator learn that generator: its orientation, its
contrast, the body around the organ. :func:`make_augmenter` turns a small, JSON-able parameter
dict (kept in the model card's ``training.augmentation``) into a MONAI ``Compose`` that takes
those cues away:

- **geometry** (image bilinear, label nearest, so label values are kept): ``RandAffined`` with
  an in-plane rotation of any angle, per-axis (anisotropic) scaling, shear and translation;
- **context**: :class:`RandDropContextd` keeps a random box around the labelled organ and
  replaces everything else with a flat, dark fill (a heart without a body around it), and a
  random crop-like shift of the field of view comes from the affine translation;
- **intensity** (image only): ``RandBiasFieldd``, ``RandAdjustContrastd`` (gamma),
  ``RandHistogramShiftd``, ``RandGaussianSmoothd`` (partial volume / blur),
  ``RandGaussianNoised``; none of them inverts the contrast.

Arrays are channel-first, ``(C, H, W)`` (2D) or ``(C, z, y, x)`` (3D, the engine's layout):
"in-plane" is the last two axes, rotation about the first spatial axis. Deterministic for a
given ``seed`` (``Compose.set_random_state``).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Hashable, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

#: the parameters of the strong augmentation (probabilities, ranges); JSON-able, stored in cards
STRONG_AUGMENTATION: Dict[str, Any] = {
    "affine_prob": 0.9,
    "rotate_deg": 180.0,  # in-plane, any angle
    "scale": [0.25, 0.25],  # per in-plane axis, independently: anisotropic zoom 0.75-1.25
    "shear": 0.1,
    "translate_px": 14.0,  # in-plane shift of the field of view, voxels
    "drop_context_prob": 0.35,
    "drop_context_margin": [0.05, 0.6],  # margin around the organ box, fraction of its size
    "bias_prob": 0.4,
    "bias_coeff": 0.4,
    "contrast_prob": 0.5,
    "gamma": [0.6, 1.7],
    "histogram_prob": 0.3,
    "histogram_points": [5, 12],
    "smooth_prob": 0.3,
    "smooth_sigma": [0.3, 1.4],  # voxels
    "noise_prob": 0.5,
    "noise_std": 0.06,  # of the [0, 1] normalised range
    # the steps below are off in this preset (probability 0: not even built, so the strong and
    # mild presets draw exactly what they drew before these keys existed); ``synth`` uses them
    "synth_prob": 0.0,  # clinicalai.label_synth.RandLabelSynthd: an image drawn from the label map
    "synth_background_classes": [2, 6],
    "synth_nobody_prob": 0.3,  # of the synthetic images: background one dark class (no body)
    "synth_blood": [0.55, 1.0],
    "synth_myo_ratio": [0.08, 0.6],  # myocardium / blood: darker than blood (bright-blood cine)
    "synth_texture": [0.0, 0.08],
    "synth_pv_prob": 0.3,  # thick-slice partial volume: blend with a zoomed copy
    "synth_pv_zoom": [0.8, 1.2],
    "synth_pv_weight": [0.15, 0.5],
    "elastic_prob": 0.0,  # 2D only: Rand2DElasticd on image and label
    "elastic_spacing_px": 24.0,
    "elastic_magnitude": [0.5, 2.0],
    "lowres_prob": 0.0,  # RandSimulateLowResolutiond: down- and up-sampling (partial volume)
    "lowres_zoom": [0.4, 0.9],
    "rician_prob": 0.0,  # RandRicianNoised (magnitude images)
    "rician_std": 0.05,
}

#: the mild augmentation earlier demo models used (small rotations, intensity scale only)
MILD_AUGMENTATION: Dict[str, Any] = {
    **STRONG_AUGMENTATION,
    "affine_prob": 0.7, "rotate_deg": 15.0, "scale": [0.1, 0.1], "shear": 0.0, "translate_px": 6.0,
    "drop_context_prob": 0.0, "bias_prob": 0.0, "contrast_prob": 0.3, "gamma": [0.7, 1.5],
    "histogram_prob": 0.0, "smooth_prob": 0.0, "noise_prob": 0.3, "noise_std": 0.03,
}

#: domain randomisation (SynthSeg idea): the strong steps, and half of the samples an image drawn
#: from the label map with random intensities per structure, plus elastic deformation, low
#: resolution and Rician noise; 2D with a label map only (the cardiac segmenter)
SYNTH_AUGMENTATION: Dict[str, Any] = {
    **STRONG_AUGMENTATION,
    "synth_prob": 0.5, "elastic_prob": 0.3, "lowres_prob": 0.25, "rician_prob": 0.25,
}

PRESETS: Dict[str, Dict[str, Any]] = {"strong": STRONG_AUGMENTATION, "mild": MILD_AUGMENTATION,
                                      "synth": SYNTH_AUGMENTATION}


def augmentation_params(preset: "str | Mapping[str, Any]" = "strong", **overrides: Any) -> Dict[str, Any]:
    """A full parameter dict: a preset name (``strong`` / ``mild``) or a dict, plus overrides.

    Raises:
        InputError: unknown preset or parameter name.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise InputError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
        params = copy.deepcopy(PRESETS[preset])
    else:
        params = {**copy.deepcopy(STRONG_AUGMENTATION), **dict(preset)}
    params.update(overrides)
    unknown = sorted(set(params) - set(STRONG_AUGMENTATION))
    if unknown:
        raise InputError(f"unknown augmentation parameter(s): {', '.join(unknown)}")
    return params


class RandDropContextd:
    """Keep a random box around the label's foreground, fill the rest of the image flat.

    The fill is the image's 1st percentile (air after normalisation), so later noise and bias
    transforms act on it as on an empty field of view. Images without a label key, or a label
    without foreground, pass unchanged.
    """

    def __init__(self, image_key: str, label_key: str, prob: float, margin: Sequence[float]) -> None:
        self.image_key, self.label_key = image_key, label_key
        self.prob, self.margin = float(prob), (float(margin[0]), float(margin[1]))
        self.R = np.random.RandomState()

    def set_random_state(self, seed: Optional[int] = None, state: Optional[np.random.RandomState] = None):
        """MONAI's Randomizable protocol (``Compose.set_random_state`` calls it)."""
        self.R = state if state is not None else np.random.RandomState(seed)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        go = self.R.rand() < self.prob  # drawn always, so the random stream does not depend on data
        margins = self.R.uniform(self.margin[0], self.margin[1], size=8)
        if not go or self.label_key not in d:
            return d
        lab = np.asarray(d[self.label_key])
        fg = np.nonzero(lab[0] > 0)
        if len(fg[0]) == 0:
            return d
        img = d[self.image_key]
        keep = np.zeros(lab.shape[1:], bool)
        box = []
        for a, idx in enumerate(fg):
            lo, hi = int(idx.min()), int(idx.max()) + 1
            size = hi - lo
            box.append(slice(max(0, lo - int(margins[2 * a] * size)), hi + int(margins[2 * a + 1] * size)))
        keep[tuple(box)] = True
        fill = float(np.percentile(np.asarray(img), 1.0))
        import torch

        keep_t = torch.as_tensor(keep)[None]
        d[self.image_key] = torch.where(keep_t, torch.as_tensor(img), torch.as_tensor(fill, dtype=torch.as_tensor(img).dtype))
        return d


def make_augmenter(params: "str | Mapping[str, Any]" = "strong", seed: int = 0, spatial_dims: int = 2,
                   image_key: str = "image", label_key: Optional[str] = "label", layout: str = "zyx"):
    """A MONAI ``Compose`` of dictionary transforms built from ``params`` (see module doc).

    Args:
        params: preset name or parameter dict (:func:`augmentation_params`).
        seed: random state of every transform (same seed, same draws).
        spatial_dims: 2 (``(C, H, W)``) or 3 (``(C, z, y, x)``, in-plane = (y, x)).
        label_key: the label entry (resampled nearest, never intensity-changed); ``None`` for
            image-only trainers (classifiers, generative models).
        layout: 3D axis order, ``zyx`` (the engine's) or ``xyz`` (MONAI's, e.g. the PET folds):
            the rotation and zoom act on the (y, x) plane either way.
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandHistogramShiftd,
    )

    if spatial_dims not in (2, 3):
        raise InputError("augmentation works on 2D or 3D arrays")
    if layout not in ("zyx", "xyz"):
        raise InputError(f"augmentation layout must be 'zyx' or 'xyz', got {layout!r}")
    p = augmentation_params(params)
    keys = (image_key,) if label_key is None else (image_key, label_key)
    modes = ("bilinear",) if label_key is None else ("bilinear", "nearest")
    rot = float(np.deg2rad(p["rotate_deg"]))
    sy, sx = (float(s) for s in p["scale"])
    if spatial_dims == 2:
        affine_kw = dict(rotate_range=(rot,), scale_range=(sy, sx), shear_range=(p["shear"], p["shear"]))
    elif layout == "zyx":  # rotation about z only (MONAI's first 3D angle turns the plane of axes 1, 2)
        affine_kw = dict(rotate_range=(rot, 0.0, 0.0), scale_range=(0.0, sy, sx))
    else:  # (x, y, z): MONAI's third angle turns the plane of axes 0, 1
        affine_kw = dict(rotate_range=(0.0, 0.0, rot), scale_range=(sx, sy, 0.0))
    sigma = tuple(float(s) for s in p["smooth_sigma"])
    synth = _synth_steps(p, spatial_dims, image_key, label_key, keys, modes)
    transforms = [] if label_key is None else [
        RandDropContextd(image_key, label_key, p["drop_context_prob"], p["drop_context_margin"])]
    transforms += [
        RandAffined(keys=keys, mode=modes, prob=p["affine_prob"], padding_mode="zeros",
                    translate_range=_translate(p["translate_px"], spatial_dims, layout), **affine_kw),
        *synth["geometry"],  # elastic deformation, then the label map is final ...
        *synth["image"],  # ... and the synthetic image is drawn from it, before bias, blur and noise
        RandBiasFieldd(keys=image_key, prob=p["bias_prob"], coeff_range=(0.0, float(p["bias_coeff"]))),
        RandAdjustContrastd(keys=image_key, prob=p["contrast_prob"], gamma=tuple(p["gamma"])),
        RandHistogramShiftd(keys=image_key, prob=p["histogram_prob"], num_control_points=tuple(p["histogram_points"])),
        # 3D: no blur across slices (the MONAI x / y / z sigmas follow the array's axis order)
        RandGaussianSmoothd(keys=image_key, prob=p["smooth_prob"], **_smooth_sigmas(sigma, spatial_dims, layout)),
        *synth["resolution"],
        RandGaussianNoised(keys=image_key, prob=p["noise_prob"], std=float(p["noise_std"])),
        *synth["noise"],
    ]
    t = Compose(transforms)
    t.set_random_state(seed)
    if label_key is not None:  # not a MONAI Randomizable (keeps MONAI out of this module's import): seeded here
        transforms[0].set_random_state(seed + 7919)
    for step in synth["image"]:  # ours too, seeded the same way
        step.set_random_state(seed + 104729)
    return _Augmenter(t, p)


def _synth_steps(p: Mapping[str, Any], spatial_dims: int, image_key: str, label_key: Optional[str],
                 keys: Tuple[str, ...], modes: Tuple[str, ...]) -> Dict[str, list]:
    """The optional steps of the ``synth`` preset, by where they go in the chain: ``geometry``
    (``Rand2DElasticd``), ``image`` (:class:`~clinicalai.label_synth.RandLabelSynthd`),
    ``resolution`` (``RandSimulateLowResolutiond``), ``noise`` (``RandRicianNoised``). A step
    with probability 0 is not built, so presets without it keep their random draws.

    Raises:
        InputError: label synthesis or elastic deformation asked for without a label map or in 3D.
    """
    from monai.transforms import Rand2DElasticd, RandRicianNoised, RandSimulateLowResolutiond

    steps: Dict[str, list] = {"geometry": [], "image": [], "resolution": [], "noise": []}
    if (p["synth_prob"] > 0 or p["elastic_prob"] > 0) and (label_key is None or spatial_dims != 2):
        raise InputError("label synthesis and elastic deformation work on 2D slices with a label map only")
    if p["elastic_prob"] > 0:
        steps["geometry"].append(Rand2DElasticd(
            keys=keys, mode=modes, prob=p["elastic_prob"], spacing=float(p["elastic_spacing_px"]),
            magnitude_range=tuple(float(m) for m in p["elastic_magnitude"]), padding_mode="zeros"))
    if p["synth_prob"] > 0:
        from .label_synth import RandLabelSynthd

        steps["image"].append(RandLabelSynthd(
            image_key, label_key, p["synth_prob"], background_classes=p["synth_background_classes"],
            nobody_prob=p["synth_nobody_prob"], blood=p["synth_blood"], myo_ratio=p["synth_myo_ratio"],
            texture=p["synth_texture"], pv_prob=p["synth_pv_prob"], pv_zoom=p["synth_pv_zoom"],
            pv_weight=p["synth_pv_weight"]))
    if p["lowres_prob"] > 0:
        steps["resolution"].append(RandSimulateLowResolutiond(
            keys=image_key, prob=p["lowres_prob"], zoom_range=tuple(float(z) for z in p["lowres_zoom"]),
            upsample_mode="bilinear" if spatial_dims == 2 else "trilinear"))
    if p["rician_prob"] > 0:
        steps["noise"].append(RandRicianNoised(keys=image_key, prob=p["rician_prob"], std=float(p["rician_std"])))
    return steps


class _Augmenter:
    """The composed transforms with their parameters (``params``, for the card); callable on a
    dict like the ``Compose`` it wraps, outputs keep the input dtype."""

    def __init__(self, compose: Any, params: Dict[str, Any]) -> None:
        self.compose, self.params = compose, params

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        import torch

        out = dict(self.compose(dict(data)))
        for k, v in data.items():
            if k in out and hasattr(v, "dtype"):
                arr = torch.as_tensor(out[k])
                arr = arr.as_tensor() if hasattr(arr, "as_tensor") else arr  # MetaTensor -> Tensor
                out[k] = arr.to(torch.as_tensor(v).dtype) if isinstance(v, torch.Tensor) else arr.numpy().astype(v.dtype)
        return out


def _translate(px: float, spatial_dims: int, layout: str):
    """MONAI's translation range (voxels) for an in-plane shift of up to ``px``."""
    px = float(px)
    if spatial_dims == 2:
        return (px, px)
    return (0.0, px, px) if layout == "zyx" else (px, px, 0.0)


def _smooth_sigmas(sigma: Tuple[float, float], spatial_dims: int, layout: str) -> Dict[str, Tuple[float, float]]:
    """``RandGaussianSmoothd``'s sigma ranges per array axis (first, second, third)."""
    none = (0.0, 0.0)
    if spatial_dims == 2:
        return {"sigma_x": sigma, "sigma_y": sigma}
    if layout == "zyx":
        return {"sigma_x": none, "sigma_y": sigma, "sigma_z": sigma}
    return {"sigma_x": sigma, "sigma_y": sigma, "sigma_z": none}


def image_augmenter(params: "str | Mapping[str, Any]" = "strong", seed: int = 0, spatial_dims: int = 3,
                    layout: str = "zyx") -> Callable[[Any], Any]:
    """:func:`make_augmenter` for one channel-first image without a label (classifiers,
    generative models, PET folds): ``f(array) -> array`` of the same shape and dtype.
    ``f.params`` holds the parameters (for the card)."""
    aug = make_augmenter(params, seed, spatial_dims, label_key=None, layout=layout)

    def apply(image: Any) -> Any:
        return aug({"image": image})["image"]

    apply.params = aug.params  # type: ignore[attr-defined]
    return apply


def augment_batch(aug: Optional[Callable[[Any], Any]], x: Any) -> Any:
    """``aug`` (an :func:`image_augmenter`) on each sample of a torch batch ``(B, C, ...)``;
    ``x`` itself when ``aug`` is ``None``."""
    if aug is None:
        return x
    import torch

    return torch.stack([torch.as_tensor(aug(xi)) for xi in x])


__all__ = ["MILD_AUGMENTATION", "PRESETS", "STRONG_AUGMENTATION", "SYNTH_AUGMENTATION", "RandDropContextd", "augment_batch",
           "augmentation_params", "image_augmenter", "make_augmenter"]

"""The array layout a network was trained with, and the spatial steps that bring a volume into it.

Two layouts (the card's ``input.layout``, DESIGN.md "Model packages"):

- ``engine``: the workflow's own convention (arrays ``(z, y, x)``; see each workflow).
- ``monai``: what MONAI's readers and transforms give a network: arrays ``(x, y, z)`` after
  ``Orientationd(axcodes)`` (default ``RAS``; ``null``: the file's own voxel order), then
  ``Spacingd(pixdim, mode)``, ``CropForegroundd`` and an intensity transform.

For a ``monai`` model the engine does each of these steps once, in a
:class:`~clinicalai.volume.SpatialPipeline`, so every output (labels, probabilities, heat
maps, attributions) goes back onto the input grid through the recorded inverses:

- reorientation: :func:`clinicalai.volume.reorient_to_axcodes` (an exact permutation);
- resampling and foreground crop: MONAI's own ``Spacing`` / ``CropForeground`` on a
  ``MetaTensor`` made from the :class:`Volume` (RAS affine), inverted by MONAI's
  ``inverse()`` exactly as ``Invertd`` does, so results match a MONAI pipeline;
- the ``(z, y, x)`` -> ``(x, y, z)`` transposition: :class:`ReversedSpatialAxes` around the
  network (and in :meth:`LoadedModel.predict`), so the workflows keep working on ``(z, y, x)``
  arrays and gradients and Grad-CAM maps come back in that order too.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, ModelError
from ..volume import SpatialPipeline, Volume, reorient_to_axcodes
from ..volume.spatial import Inverse

#: LPS <-> RAS: negate the first two patient axes (the same matrix both ways)
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_monai_layout(card) -> bool:
    """True when the card's network saw MONAI-layout arrays ``(x, y, z)``."""
    return card is not None and card.input.layout.kind == "monai"


# ----------------------------------------------------------------------------- Volume <-> MONAI
def ras_affine(volume: Volume) -> np.ndarray:
    """The 4x4 index ``(i, j, k)`` -> RAS mm affine of ``volume`` (MONAI's / nibabel's convention)."""
    return _LPS_RAS @ volume.grid.index_to_lps()


def to_metatensor(volume: Volume, array_zyx: Optional[np.ndarray] = None):
    """``volume`` as a MONAI ``MetaTensor`` ``(C, x, y, z)`` with its RAS affine.

    ``array_zyx``: values on the volume's grid, ``(z, y, x)`` or ``(C, z, y, x)`` (default: the
    volume's own array).
    """
    import torch
    from monai.data import MetaTensor

    a = np.asarray(volume.array if array_zyx is None else array_zyx)
    a = a[None] if a.ndim == 3 else a
    xyz = np.ascontiguousarray(np.transpose(a, (0, 3, 2, 1)))
    return MetaTensor(torch.from_numpy(xyz), affine=torch.as_tensor(ras_affine(volume), dtype=torch.float64))


def volume_from_metatensor(data, like: Volume, channel: int = 0) -> Volume:
    """Channel ``channel`` of a MONAI ``(C, x, y, z)`` tensor as a :class:`Volume` on the grid its
    affine describes (spacing, origin and direction recovered from the RAS affine)."""
    affine_lps = _LPS_RAS @ np.asarray(data.affine, dtype=float)
    m = affine_lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    arr = np.asarray(data[channel].detach().cpu().numpy() if hasattr(data, "detach") else data[channel])
    return Volume(np.ascontiguousarray(arr.transpose(2, 1, 0)), spacing=tuple(spacing), origin=tuple(affine_lps[:3, 3]),
                  direction=direction, modality=like.modality, units=like.units, metadata=dict(like.metadata))


def monai_step(volume: Volume, transform) -> Tuple[Volume, Inverse]:
    """Apply an invertible MONAI array transform (``Spacing``, ``CropForeground``, ...) to
    ``volume`` as a SpatialPipeline step.

    The inverse is the transform's own ``inverse()`` on the traced operation, as MONAI's
    ``Invertd`` runs it; ``interpolator="nearest"`` inverts a resampling with nearest
    neighbour (``Invertd(nearest_interp=True)``, for labels).
    """
    from monai.data import MetaTensor

    in_grid = volume.grid
    out = transform(to_metatensor(volume))
    if not isinstance(out, MetaTensor) or not out.applied_operations:
        raise ModelError(f"MONAI {type(transform).__name__} did not record how to invert it")
    trace = copy.deepcopy(out.applied_operations)
    result = volume_from_metatensor(out, volume)

    def inverse(v: Volume, interpolator: str = "linear") -> Volume:
        mt = to_metatensor(result, v.array)
        ops = copy.deepcopy(trace)
        if interpolator in ("nearest", "label"):
            for op in ops:
                extra = op.get("extra_info") or {}
                if "mode" in extra:
                    extra["mode"] = "nearest"
        mt.applied_operations = ops
        back = transform.inverse(mt)
        arr = np.asarray(back[0].detach().cpu().numpy()).transpose(2, 1, 0)
        if arr.shape != in_grid.shape:
            raise ModelError(f"MONAI {type(transform).__name__} inverse gave shape {arr.shape}, not {in_grid.shape}")
        return Volume.from_grid(in_grid, np.ascontiguousarray(arr).astype(v.array.dtype, copy=False),
                                modality=v.modality, units=v.units, metadata=dict(v.metadata))

    return result, inverse


def monai_spacing(volume: Volume, pixdim: Sequence[float], mode: str = "bilinear") -> Tuple[Volume, Inverse]:
    """Resample to ``pixdim`` (mm, along the volume's own i, j, k axes) with MONAI ``Spacing``."""
    from monai.transforms import Spacing

    return monai_step(volume.with_array(volume.array.astype(np.float32)), Spacing(pixdim=tuple(float(p) for p in pixdim), mode=mode))


def monai_crop_foreground(volume: Volume, threshold: float = 0.0, margin: Any = 0,
                          allow_smaller: Optional[bool] = None) -> Tuple[Volume, Inverse]:
    """Crop to the box of voxels above ``threshold`` (+ ``margin`` voxels) with MONAI
    ``CropForeground``; the inverse pads the cut-away border with zeros, as ``Invertd`` does."""
    from monai.transforms import CropForeground

    if not np.any(volume.array > threshold):
        raise InputError(f"the image has no voxel above {threshold}; the model crops to the foreground and finds none")
    thr = float(threshold)
    options = {} if allow_smaller is None else {"allow_smaller": bool(allow_smaller)}
    return monai_step(volume, CropForeground(select_fn=lambda x: x > thr, margin=margin, **options))


# ----------------------------------------------------------------------------- the card's pipeline
def spatial_steps(card) -> list:
    """The card's spatial steps as ``(step, args)`` for a MONAI-layout model: reorientation
    to ``axcodes`` and resampling to ``spacing_mm``, in MONAI's order (the foreground crop
    follows in :func:`prepare_monai_input`, on the image or on its normalised values).
    Empty for an engine-layout card (its workflow applies its own steps)."""
    if not is_monai_layout(card):
        return []
    steps: list = []
    layout = card.input.layout
    if layout.axcodes:
        steps.append((reorient_to_axcodes, (layout.axcodes,)))
    if card.input.spacing_mm is not None:
        pixdim = list(card.input.spacing_mm)
        if len(pixdim) == 2:
            pixdim = pixdim + [-1]  # a 2D model: resample in-plane, keep the slices (MONAI: pixdim <= 0 keeps)
        steps.append((monai_spacing, (tuple(pixdim), card.input.resample_mode or "bilinear")))
    return steps


def apply_spatial_steps(volume: Volume, card, pipeline: Optional[SpatialPipeline] = None) -> Tuple[Volume, SpatialPipeline]:
    """``volume`` after the card's :func:`spatial_steps`, and the pipeline that inverts them."""
    pipe = pipeline if pipeline is not None else SpatialPipeline()
    for step, args in spatial_steps(card):
        volume = pipe.apply(step, volume, *args)
    return volume, pipe


def prepare_monai_input(volume: Volume, card, pipeline: Optional[SpatialPipeline] = None) -> Tuple[Volume, SpatialPipeline]:
    """``volume`` on the network grid of a MONAI-layout card, normalised, and the pipeline
    that maps network-grid results back onto ``volume``'s grid.

    Order as in a MONAI bundle: ``Orientation``, ``Spacing``, then the intensity transform and
    ``CropForeground`` in the order the card says (``crop_foreground.after_normalization``).
    """
    volume, pipe = apply_spatial_steps(volume, card, pipeline)
    norm = card.input.normalization
    crop = card.input.crop_foreground
    if crop is not None and crop.after_normalization:
        volume = volume.with_array(normalize_intensity(volume.array, norm))
        return pipe.apply(monai_crop_foreground, volume, crop.threshold, crop.margin, crop.allow_smaller), pipe
    if crop is not None:
        volume = pipe.apply(monai_crop_foreground, volume, crop.threshold, crop.margin, crop.allow_smaller)
    return volume.with_array(normalize_intensity(volume.array, norm)), pipe


def normalize_intensity(array: np.ndarray, normalization: Any = None) -> np.ndarray:
    """Intensity normalisation of one channel as a card's ``input.normalization`` says.

    ``kind``: ``none``; ``minmax`` (``lower``/``upper`` value range, default the array's min
    and max, to [0, 1]); ``percentile`` (``lower``/``upper`` percentiles, default 0.5 / 99.5,
    clipped, to [0, 1]); ``zscore`` (mean 0, sd 1, see ``nonzero`` below); ``scale`` (divide by ``scale``); ``range`` (MONAI
    ``ScaleIntensityRange``: ``[a_min, a_max]`` -> ``[b_min, b_max]``, clipped when ``clip``).
    """
    a = np.asarray(array, dtype=np.float32)
    if normalization is None:
        return a
    get = normalization.get if isinstance(normalization, dict) else (lambda k: getattr(normalization, k, None))
    kind = get("kind") or "none"
    if kind == "none":
        return a
    if kind == "minmax":
        lo = float(get("lower")) if get("lower") is not None else float(a.min())
        hi = float(get("upper")) if get("upper") is not None else float(a.max())
        return ((a - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    if kind == "percentile":
        plo = float(get("lower")) if get("lower") is not None else 0.5
        phi = float(get("upper")) if get("upper") is not None else 99.5
        lo, hi = np.percentile(a, [plo, phi])
        return ((np.clip(a, lo, hi) - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    if kind == "zscore":
        # nonzero true / false: MONAI NormalizeIntensity(nonzero=...) (statistics over the
        # non-zero voxels, only those changed / over all voxels); unset: this engine's older
        # rule (statistics over the non-zero voxels, applied to every voxel)
        nonzero = get("nonzero")
        fg = a[a != 0] if nonzero is not False and np.any(a != 0) else a.ravel()
        sd = float(fg.std()) or 1.0
        out = (a - float(fg.mean())) / sd
        if nonzero is True:
            out = np.where(a != 0, out, a)
        return out.astype(np.float32)
    if kind == "scale":
        s = float(get("scale") or 1.0)
        return (a / s).astype(np.float32)
    if kind == "range":
        a_min, a_max = float(get("a_min")), float(get("a_max"))
        b_min = float(get("b_min")) if get("b_min") is not None else 0.0
        b_max = float(get("b_max")) if get("b_max") is not None else 1.0
        out = (a - a_min) / (a_max - a_min if a_max != a_min else 1.0) * (b_max - b_min) + b_min
        if get("clip"):
            out = np.clip(out, min(b_min, b_max), max(b_min, b_max))
        return out.astype(np.float32)
    raise ModelError(f"unknown input normalisation {kind!r} in the model card")


# ----------------------------------------------------------------------------- axis order
def reverse_spatial(array: np.ndarray, n_spatial: int) -> np.ndarray:
    """Reverse the last ``n_spatial`` axes of a ``(N, C, *spatial)`` array (numpy or torch):
    ``(z, y, x)`` <-> ``(x, y, z)``."""
    lead = array.ndim - n_spatial
    order = list(range(lead)) + list(range(array.ndim - 1, lead - 1, -1))
    return array.permute(*order) if hasattr(array, "permute") else np.transpose(array, order)


def reversed_spatial_axes(network, n_spatial: int):
    """``network`` wrapped so that it takes and gives engine-order ``(N, C, z, y, x)`` tensors
    while it computes on MONAI-order ``(N, C, x, y, z)`` ones (see :class:`ReversedSpatialAxes`)."""
    import torch.nn as nn

    class ReversedSpatialAxes(nn.Module):
        """Reverses the spatial axes of the input before ``network`` and of every spatial
        output after it. ``inner_network`` is the wrapped network (its layer names are the
        card's ``cam_layer`` names); CAM maps taken inside it are in its own order, which
        :func:`cam_to_engine_order` undoes."""

        spatial_axes_reversed = True

        def __init__(self) -> None:
            super().__init__()
            self.inner_network = network

        def forward(self, x):
            out = self.inner_network(reverse_spatial(x, n_spatial))
            if hasattr(out, "ndim") and out.ndim == x.ndim:
                out = reverse_spatial(out, n_spatial)
            return out

    # the wrapper takes the network's mode (an eval-mode network must stay one when a method
    # later restores "the wrapper's" mode)
    return ReversedSpatialAxes().train(network.training)


def inner_network(module):
    """The network inside a :func:`reversed_spatial_axes` wrapper (the module itself otherwise)."""
    return getattr(module, "inner_network", module)


def cam_to_engine_order(cam, module):
    """A CAM map ``(N, 1, *spatial)`` taken on a layer inside ``module``: in engine order."""
    if getattr(module, "spatial_axes_reversed", False):
        return reverse_spatial(cam, cam.ndim - 2)
    return cam


__all__ = [
    "apply_spatial_steps", "prepare_monai_input", "cam_to_engine_order", "inner_network", "is_monai_layout", "monai_crop_foreground",
    "monai_spacing", "monai_step", "normalize_intensity", "ras_affine", "reverse_spatial", "reversed_spatial_axes",
    "spatial_steps", "to_metatensor", "volume_from_metatensor",
]

"""Slice preprocessing for the 2D segmenters, and its exact inverse.

A short-axis volume ``(z, y, x)`` goes to network space ``(z, 128, 128)`` by one in-plane box
per volume (:class:`SliceFrame`: a crop centred on the heart, in voxels of the input grid,
possibly reaching outside the image, where it is zero-padded) followed by a per-slice
resize to 128 x 128. The resize maps pixel *centres* linearly (``align_corners=False``), so
network pixel ``u`` sits at input coordinate ``y0 + (u + 0.5) * height / 128 - 0.5``, and
:func:`from_network` inverts the same map: results land on the input ``(z, y, x)`` grid
exactly, and are exact (voxel for voxel) when the box is 128 x 128 inside the image.

The slice axis is never resampled: every input slice is one network sample.

Intensities are normalised per volume between the 1st and 99th percentiles, clipped to
[0, 1] (:func:`normalize_intensity`: numpy percentiles, then the card rule ``range`` of
:func:`clinicalai.models.layout.normalize_intensity`, MONAI's ``ScaleIntensityRange``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..models.layout import normalize_intensity as card_normalization
from .labels import N_CLASSES

#: network in-plane size (pixels)
NETWORK_SIZE: Tuple[int, int] = (128, 128)
#: smallest heart crop (mm): a box never gets tighter than this around a small heart
MIN_CROP_MM = 90.0
#: crop edge / largest extent of the heart foreground (RV + MYO + LV)
CROP_MARGIN = 1.6


@dataclass(frozen=True)
class SliceFrame:
    """One in-plane box per volume: where network space sits on the input grid.

    Attributes:
        y0, x0: top-left voxel of the box on the input grid (may be negative: padding).
        height, width: box size in input voxels (may reach past the image: padding).
        in_shape: input in-plane shape ``(y, x)``.
        out_size: network in-plane size ``(y, x)``, 128 x 128 by default.
    """

    y0: int
    x0: int
    height: int
    width: int
    in_shape: Tuple[int, int]
    out_size: Tuple[int, int] = NETWORK_SIZE

    @property
    def center_yx(self) -> Tuple[float, float]:
        return (self.y0 + (self.height - 1) / 2.0, self.x0 + (self.width - 1) / 2.0)

    @property
    def is_identity_resize(self) -> bool:
        return (self.height, self.width) == tuple(self.out_size)

    def network_to_input_yx(self, uv: np.ndarray) -> np.ndarray:
        """Map network pixel coordinates ``(..., 2)`` (row, col) to input voxel coordinates."""
        uv = np.asarray(uv, float)
        sy = self.height / self.out_size[0]
        sx = self.width / self.out_size[1]
        return np.stack([self.y0 + (uv[..., 0] + 0.5) * sy - 0.5, self.x0 + (uv[..., 1] + 0.5) * sx - 0.5], -1)

    def inside(self, shape_yx: Sequence[int]) -> Tuple[int, int, int, int]:
        """``(ys, ye, xs, xe)``: the part of the box within an image of in-plane ``shape_yx``
        (the one place that clips a box to the image: cropping, pasting back, confidence)."""
        ny, nx = (int(n) for n in shape_yx)
        return max(self.y0, 0), min(self.y0 + self.height, ny), max(self.x0, 0), min(self.x0 + self.width, nx)

    def to_dict(self) -> dict:
        return {"y0": self.y0, "x0": self.x0, "height": self.height, "width": self.width,
                "in_shape": list(self.in_shape), "out_size": list(self.out_size)}


def frame_for_volume(
    shape: Sequence[int],
    center_yx: Optional[Sequence[float]] = None,
    size_mm: Optional[float] = None,
    spacing: Optional[Sequence[float]] = None,
    out_size: Sequence[int] = NETWORK_SIZE,
) -> SliceFrame:
    """The box for a volume of ``shape`` ``(z, y, x)`` or ``(y, x)``.

    Args:
        shape: input shape.
        center_yx: box centre in input voxels; default the slice centre.
        size_mm: box edge in mm (square in mm, so anisotropic pixels give a non-square box in
            voxels); default the whole slice (the longer side, the shorter one padded).
        spacing: volume spacing ``(x, y[, z])`` in mm; default 1 mm.
        out_size: network in-plane size.
    """
    ny, nx = (int(s) for s in tuple(shape)[-2:])
    sx, sy = (float(s) for s in (tuple(spacing)[:2] if spacing is not None else (1.0, 1.0)))
    if center_yx is None:
        center_yx = ((ny - 1) / 2.0, (nx - 1) / 2.0)
    if size_mm is None:
        size_mm = max(ny * sy, nx * sx)
    if not np.isfinite(size_mm) or size_mm <= 0:
        raise InputError(f"crop size must be a positive number of mm, got {size_mm}")
    h = max(1, int(round(size_mm / sy)))
    w = max(1, int(round(size_mm / sx)))
    y0 = int(round(float(center_yx[0]) - (h - 1) / 2.0))
    x0 = int(round(float(center_yx[1]) - (w - 1) / 2.0))
    return SliceFrame(y0, x0, h, w, (ny, nx), tuple(int(s) for s in out_size))


def frame_from_mask(
    mask: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    out_size: Sequence[int] = NETWORK_SIZE,
    margin: float = CROP_MARGIN,
    min_mm: float = MIN_CROP_MM,
) -> SliceFrame:
    """A heart-centred box from a foreground mask ``(z, y, x)`` (any non-zero voxel).

    The same rule serves training (ground-truth mask) and inference (the coarse pass's
    prediction), so the network sees crops framed alike in both. An empty mask gives the
    whole-slice frame.
    """
    mask = np.asarray(mask) != 0
    shape = mask.shape
    if not mask.any():
        return frame_for_volume(shape, spacing=spacing, out_size=out_size)
    sx, sy = (float(s) for s in (tuple(spacing)[:2] if spacing is not None else (1.0, 1.0)))
    proj = mask.reshape(-1, shape[-2], shape[-1]).any(axis=0)
    ys, xs = np.nonzero(proj)
    center = ((ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0)
    extent = max((ys.max() - ys.min() + 1) * sy, (xs.max() - xs.min() + 1) * sx)
    return frame_for_volume(shape, center, max(min_mm, margin * extent), spacing, out_size)


def normalize_intensity(array: np.ndarray, lower: float = 1.0, upper: float = 99.0,
                        reference: Optional[np.ndarray] = None) -> np.ndarray:
    """Scale ``array`` so its ``lower``/``upper`` percentiles map to 0/1, clipped (float32).

    ``reference``: the voxels the percentiles are taken from (default: all of ``array``), e.g.
    the fine pass's box (:func:`crop_voxels`).

    The cardiac segmenters' rule (card ``normalization {"kind": "percentile", "lower": 1,
    "upper": 99}``). The scaling is the card rule ``range`` of
    :func:`clinicalai.models.layout.normalize_intensity` (MONAI ``ScaleIntensityRange``
    arithmetic in float32, what the bundled models were trained with; that function's
    ``percentile`` rule computes in float64 and differs in the last bit).
    """
    a = np.asarray(array, dtype=np.float32)
    # the bounds come from numpy: MONAI's ScaleIntensityRangePercentiles computes them with
    # torch.quantile, which sorts the whole volume and was 17x slower here. Python floats, so
    # that the scaling stays in float32
    ref = a if reference is None else np.asarray(reference, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(ref, [lower, upper]))
    if not hi > lo:  # the range rule would divide by one and keep outliers; a flat image carries nothing
        return np.zeros_like(a)
    return card_normalization(a, {"kind": "range", "a_min": lo, "a_max": hi, "b_min": 0.0, "b_max": 1.0, "clip": True})


def crop_voxels(array: np.ndarray, frame: SliceFrame) -> np.ndarray:
    """The voxels of ``(z, y, x)`` ``array`` inside ``frame``'s box on every slice (the part of
    the box within the image; padding is not a voxel)."""
    ys, ye, xs, xe = frame.inside(array.shape[-2:])
    return array[..., ys:ye, xs:xe]


def _crop_pad(array: np.ndarray, frame: SliceFrame, fill: float = 0.0) -> np.ndarray:
    """``(..., y, x)`` -> ``(..., height, width)`` box of ``frame``, ``fill`` outside the image."""
    out = np.full(array.shape[:-2] + (frame.height, frame.width), fill, dtype=array.dtype)
    ys, ye, xs, xe = frame.inside(array.shape[-2:])
    if ye > ys and xe > xs:
        out[..., ys - frame.y0:ye - frame.y0, xs - frame.x0:xe - frame.x0] = array[..., ys:ye, xs:xe]
    return out


def _paste(box: np.ndarray, frame: SliceFrame, out: np.ndarray) -> np.ndarray:
    """Write the part of ``box`` ``(..., height, width)`` that lies inside ``out`` ``(..., y, x)``."""
    ys, ye, xs, xe = frame.inside(out.shape[-2:])
    if ye > ys and xe > xs:
        out[..., ys:ye, xs:xe] = box[..., ys - frame.y0:ye - frame.y0, xs - frame.x0:xe - frame.x0]
    return out


def _resize(array: np.ndarray, size: Sequence[int], mode: str) -> np.ndarray:
    """Resize the last two axes of ``(N, C, y, x)`` float32 with torch (pixel-centre aligned)."""
    import torch
    import torch.nn.functional as F

    size = tuple(int(s) for s in size)
    if tuple(array.shape[-2:]) == size:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if mode == "nearest":
        # "nearest-exact" samples at pixel centres, the same convention as bilinear
        out = F.interpolate(t, size=size, mode="nearest-exact")
    else:
        # antialias when shrinking, so a large crop is not aliased into the 128 x 128 grid
        shrinking = size[0] < array.shape[-2] or size[1] < array.shape[-1]
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out.numpy()


def to_network(array_zyx: np.ndarray, frame: SliceFrame, kind: str = "image", normalize: bool = True) -> np.ndarray:
    """Input ``(z, y, x)`` -> network space ``(z, 128, 128)``.

    Args:
        array_zyx: image or label volume.
        frame: the box (:func:`frame_for_volume` / :func:`frame_from_mask`).
        kind: ``"image"`` (percentile-normalised over the whole volume, bilinear, float32) or
            ``"labels"`` (nearest, uint8).
        normalize: for images, apply :func:`normalize_intensity` first.
    """
    a = np.asarray(array_zyx)
    if a.ndim != 3:
        raise InputError(f"expected a (z, y, x) array, got shape {a.shape}")
    if tuple(a.shape[-2:]) != tuple(frame.in_shape):
        raise InputError(f"array in-plane shape {a.shape[-2:]} does not match the frame's {frame.in_shape}")
    if kind == "image":
        a = normalize_intensity(a) if normalize else a.astype(np.float32)
        box = _crop_pad(a, frame, 0.0)
        return _resize(box[:, None], frame.out_size, "bilinear")[:, 0].astype(np.float32)
    if kind == "labels":
        box = _crop_pad(a.astype(np.uint8), frame, 0)
        return _resize(box[:, None].astype(np.float32), frame.out_size, "nearest")[:, 0].round().astype(np.uint8)
    raise ValueError(f"kind must be 'image' or 'labels', got {kind!r}")


def one_hot(labels: np.ndarray, num_classes: int = N_CLASSES) -> np.ndarray:
    """Labels ``(...)`` -> float32 one-hot ``(num_classes, ...)`` (channel first)."""
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise InputError(f"label values must be in 0..{num_classes - 1}, found {int(lab.min())}..{int(lab.max())}")
    return (np.arange(num_classes).reshape((-1,) + (1,) * lab.ndim) == lab[None]).astype(np.float32)


def from_network(
    array: np.ndarray,
    frame: SliceFrame,
    out_shape: Sequence[int],
    kind: str = "labels",
    num_classes: int = N_CLASSES,
    method: str = "argmax",
) -> np.ndarray:
    """Network space back onto the input ``(z, y, x)`` grid.

    Args:
        array: labels ``(z, 128, 128)`` or probabilities ``(C, z, 128, 128)``.
        frame: the box used by :func:`to_network`.
        out_shape: input shape ``(z, y, x)``.
        kind: ``"labels"`` -> uint8 ``(z, y, x)``; ``"probabilities"`` -> float32
            ``(C, z, y, x)`` (outside the box: background probability 1).
        method: for labels, ``"argmax"`` (one-hot resized bilinearly, then argmax: smooth
            boundaries) or ``"nearest"``.
    """
    out_shape = tuple(int(s) for s in out_shape)
    if len(out_shape) != 3 or out_shape[1:] != tuple(frame.in_shape):
        raise InputError(f"output shape {out_shape} does not match the frame's in-plane shape {frame.in_shape}")
    a = np.asarray(array)
    box_size = (frame.height, frame.width)
    if kind == "labels":
        if a.shape != (out_shape[0],) + tuple(frame.out_size):
            raise InputError(f"labels must be (z, {frame.out_size[0]}, {frame.out_size[1]}) with z={out_shape[0]}, got {a.shape}")
        if method == "nearest" or frame.is_identity_resize:
            box = _resize(a[:, None].astype(np.float32), box_size, "nearest")[:, 0].round().astype(np.uint8)
        elif method == "argmax":
            probs = np.moveaxis(one_hot(a, num_classes), 0, 1)  # (z, C, h, w)
            box = _resize(probs, box_size, "bilinear").argmax(axis=1).astype(np.uint8)
        else:
            raise ValueError(f"method must be 'argmax' or 'nearest', got {method!r}")
        return _paste(box, frame, np.zeros(out_shape, np.uint8))
    if kind == "probabilities":
        if a.ndim != 4 or a.shape[1:] != (out_shape[0],) + tuple(frame.out_size):
            raise InputError(f"probabilities must be (C, z, {frame.out_size[0]}, {frame.out_size[1]}), got {a.shape}")
        box = np.moveaxis(_resize(np.moveaxis(a, 0, 1).astype(np.float32), box_size, "bilinear"), 1, 0)
        out = np.zeros((a.shape[0],) + out_shape, np.float32)
        out[0] = 1.0
        return _paste(box, frame, out)
    raise ValueError(f"kind must be 'labels' or 'probabilities', got {kind!r}")


__all__ = [
    "CROP_MARGIN",
    "MIN_CROP_MM",
    "NETWORK_SIZE",
    "SliceFrame",
    "frame_for_volume",
    "frame_from_mask",
    "from_network",
    "crop_voxels",
    "normalize_intensity",
    "one_hot",
    "to_network",
]

"""From a :class:`Volume` to a classifier's input tensor as its model card says, and back.

Spatial steps go through :class:`clinicalai.volume.SpatialPipeline` (reorient to LPS, resample
to the card's spacing, crop/pad to its size), so a map computed on the network grid is put back
onto the input grid exactly (``Prepared.to_input_grid``). A 2D model (``spatial_dims: 2``) sees
the volume one axial slice at a time: the batch is the stack of slices.

Card conventions (DESIGN.md): ``input.spacing_mm`` and ``input.size`` are in ITK order
``(x, y, z)`` (``(x, y)`` for a 2D model); the network tensor is ``(N, C, z, y, x)`` (3D) or
``(N=z, C, y, x)`` (2D). A MONAI-layout card (``input.layout.kind: monai``) gets MONAI's
spatial steps instead (:mod:`clinicalai.models.layout`) and its network, wrapped at loading,
still takes ``(z, y, x)`` tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from ..models.layout import is_monai_layout, normalize_intensity, prepare_monai_input
from ..volume import SpatialPipeline, Volume, crop_or_pad, reorient_to_lps, resample_to_spacing
from .tissue import tissue_probability_maps


@dataclass
class Prepared:
    """A network input and the way back to the input grid.

    Attributes:
        tensor: float32 ``(1, C, z, y, x)`` for a 3D model, ``(z, C, y, x)`` for a 2D model.
        pipeline: the spatial steps applied (their inverse maps the network grid back).
        net_volume: channel 0 on the network grid (the template of maps on that grid).
        slicewise: ``True`` for a 2D model run slice by slice.
    """

    tensor: Any
    pipeline: SpatialPipeline
    net_volume: Volume
    slicewise: bool

    def to_input_grid(self, map_zyx: np.ndarray) -> Volume:
        """A ``(z, y, x)`` map on the network grid -> a Volume on the input grid (linear)."""
        vol = self.net_volume.with_array(np.asarray(map_zyx, dtype=np.float32), modality=None, units=None, metadata={})
        return self.pipeline.invert(vol, interpolator="linear")


def _channels(volume: Union[Volume, Sequence[Volume]]) -> List[Volume]:
    vols = [volume] if isinstance(volume, Volume) else list(volume)
    if not vols or not all(isinstance(v, Volume) for v in vols):
        raise InputError("attribution needs an image volume (or one volume per input channel)")
    for v in vols[1:]:
        if not v.same_grid(vols[0], atol=1e-4):
            raise InputError("the input channels are not on the same grid; resample them onto the first one")
    for v in vols:
        v.require_finite("image")
    return vols


def _card_geometry(card, volume: Volume):
    dims = int(getattr(card, "spatial_dims", 3)) if card is not None else 3
    spacing = size = None
    if card is not None and card.input.spacing_mm is not None:
        sp = list(card.input.spacing_mm)
        spacing = sp + [volume.spacing[2]] if dims == 2 else sp
    if card is not None and card.input.size is not None:
        sz = list(card.input.size)
        size = sz[::-1] if dims == 3 else None  # (z, y, x); the 2D case is filled after resampling
        if dims == 2:
            size = ("slices", sz[1], sz[0])
    return dims, spacing, size


def _input_mode(card) -> str:
    extra = (getattr(card.input, "model_extra", None) or {}) if card is not None else {}
    return str(extra.get("input_mode", "intensity"))


def prepare_input(volume: Union[Volume, Sequence[Volume]], card=None, device: str = "cpu") -> Prepared:
    """The network input for ``volume`` (one Volume per channel) as ``card`` says (``None``:
    the array as it is, one channel, 3D)."""
    vols = _channels(volume)
    n_channels = int(card.input.channels) if card is not None else len(vols)
    if _input_mode(card) == "tpm":
        n_channels = 1  # one image, expanded into tissue probability maps
    if len(vols) != n_channels:
        raise InputError(f"the model expects {n_channels} input channel(s) (one volume each), got {len(vols)}")
    dims, spacing, size = _card_geometry(card, vols[0])
    if dims == 3 and vols[0].shape[0] < 2:
        raise InputError("this is a 2D image; the model is a 3D classifier and needs a volume")
    pipe = SpatialPipeline()
    if is_monai_layout(card):
        # MONAI's Orientation / Spacing / intensity / CropForeground, as the model was trained;
        # no crop to input.size (a MONAI pipeline crops only where a transform says so)
        nets = [prepare_monai_input(v, card, pipe if ci == 0 else None)[0] for ci, v in enumerate(vols)]
        stack = np.stack([n.array for n in nets], axis=0)
        return _as_prepared(stack, dims, device, pipe, nets[0])
    steps = [(reorient_to_lps, ())]
    if spacing is not None:
        steps.append((resample_to_spacing, (tuple(spacing),)))
    arrays = []
    net0: Optional[Volume] = None
    for ci, v in enumerate(vols):
        cur = v
        for step, args in steps:
            cur = pipe.apply(step, cur, *args) if ci == 0 else step(cur, *args)[0]
        if size is not None:
            target = (cur.shape[0], size[1], size[2]) if size[0] == "slices" else tuple(size)
            cur = pipe.apply(crop_or_pad, cur, target) if ci == 0 else crop_or_pad(cur, target)[0]
        if ci == 0:
            net0 = cur
        if _input_mode(card) == "tpm":
            # tissue probability maps instead of intensities (the constrained classifier's option)
            arrays.extend(tissue_probability_maps(cur.array))
        else:
            norm = card.input.normalization if card is not None else None
            arrays.append(normalize_intensity(cur.array, norm))
    return _as_prepared(np.stack(arrays, axis=0), dims, device, pipe, net0)


def _as_prepared(stack: np.ndarray, dims: int, device: str, pipe: SpatialPipeline, net0: Volume) -> Prepared:
    """``stack`` ``(C, z, y, x)`` as the network's batch: ``(1, C, z, y, x)`` for a 3D model,
    the slices ``(z, C, y, x)`` for a 2D one."""
    import torch

    if dims == 2:
        tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(stack, 1, 0)))  # (z, C, y, x)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(stack[None]))
    return Prepared(tensor.to(device), pipe, net0, slicewise=(dims == 2))

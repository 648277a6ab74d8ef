"""From a user's volume to a generative model's grid and back, and the training sets.

A generative model sees a fixed grid (``input.spacing_mm`` and ``input.size`` of its card, both
x, y, z). :func:`to_model_grid` reorients to LPS, resamples to that spacing, crops or pads
around the volume centre and normalises; the recorded :class:`SpatialPipeline` puts every map
back onto the input grid exactly. Training uses the same function, so a model never sees data
prepared differently from what it is later given.

Two input kinds:

- ``intensity``: one channel, divided by the upper percentile of the cropped volume (the
  phantom intensity scale varies by +-15 % between cases);
- ``labels``: a label volume whose values are listed in ``label_values`` (the cortical-folding
  skeletons: 0 inside the brain, 11 outside, 60 sulcus), one-hot encoded, one channel per value.

Two fields of view (``field_of_view``, intensity models only):

- ``centre``: the model sees one crop of ``size`` at the volume centre; maps are 0 outside it.
- ``whole``: the model is trained on random windows of ``size`` anywhere in the head and
  reads the whole volume through overlapping windows (MONAI's sliding-window inference,
  Gaussian-weighted), so a lesion anywhere in the brain is seen. Every window is divided by
  the same scale as the centre crop's (its upper percentile), so training and inference agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, ModelError
from ..phantoms.brain import brain_case
from ..volume import SpatialPipeline, Volume, crop_or_pad, read_volume, reorient_to_lps, resample_to_spacing

INPUT_KINDS = ("intensity", "labels")
FIELDS_OF_VIEW = ("centre", "whole")
#: voxel classes of the cortical-folding skeletons: inside brain, outside brain, sulcus
SULCAL_LABELS = (0, 11, 60)


@dataclass(frozen=True)
class GridSpec:
    """The grid and value encoding a generative model expects.

    Attributes:
        spacing_mm: voxel size ``(x, y, z)`` in mm.
        size: voxels ``(x, y, z)``.
        input_kind: ``"intensity"`` or ``"labels"``.
        label_values: the label values, one channel each (``labels`` only).
        percentile: intensity normalisation: divide by this percentile of the cropped volume.
        field_of_view: ``centre`` (one crop) or ``whole`` (sliding windows; module docstring).
    """

    spacing_mm: Tuple[float, float, float]
    size: Tuple[int, int, int]
    input_kind: str = "intensity"
    label_values: Tuple[int, ...] = ()
    percentile: float = 98.0
    field_of_view: str = "centre"

    def __post_init__(self) -> None:
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise InputError(f"field of view must be one of {', '.join(FIELDS_OF_VIEW)}, got {self.field_of_view!r}")
        if self.field_of_view == "whole" and self.input_kind != "intensity":
            raise InputError("a whole field of view (sliding windows) is for intensity models; "
                             "label models see one crop")

    @property
    def whole(self) -> bool:
        return self.field_of_view == "whole"

    @property
    def channels(self) -> int:
        return len(self.label_values) if self.input_kind == "labels" else 1

    @property
    def shape_zyx(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in reversed(self.size))  # type: ignore[return-value]

    @property
    def in_shape(self) -> Tuple[int, ...]:
        """``(channels, z, y, x)``: the ``in_shape`` of the network."""
        return (self.channels, *self.shape_zyx)

    def card_input(self) -> dict:
        """The ``input`` block of a model card."""
        norm = ({"kind": "percentile", "upper": self.percentile} if self.input_kind == "intensity"
                else {"kind": "none"})
        block = {"channels": self.channels, "spacing_mm": list(self.spacing_mm), "size": list(self.size),
                 "normalization": norm}
        if self.input_kind == "intensity":
            block["modality"] = "MR"  # brain MR phantoms; label inputs (sulci, tissues) have no modality
        return block

    def card_extra(self) -> dict:
        extra = {"input_kind": self.input_kind, "label_values": list(self.label_values)}
        if self.whole:
            extra["field_of_view"] = "whole"  # absent: centre (cards written before it existed)
        return extra

    @classmethod
    def from_card(cls, card) -> "GridSpec":
        inp = card.input
        if inp.spacing_mm is None or inp.size is None:
            raise ModelError(f"the card of {card.name} needs input.spacing_mm and input.size (x, y, z) "
                             "for a generative model")
        kind = card.extra_get("input_kind", "intensity")
        if kind not in INPUT_KINDS:
            raise ModelError(f"card input_kind must be one of {INPUT_KINDS}, got {kind!r}")
        values = tuple(int(v) for v in card.extra_get("label_values", []) or [])
        if kind == "labels" and len(values) != inp.channels:
            raise ModelError(f"card label_values {values} must list one value per input channel ({inp.channels})")
        upper = inp.normalization.upper if inp.normalization.upper is not None else 98.0
        field_of_view = card.extra_get("field_of_view", "centre")
        if field_of_view not in FIELDS_OF_VIEW:
            raise ModelError(f"card field_of_view must be one of {FIELDS_OF_VIEW}, got {field_of_view!r}")
        try:
            return cls(tuple(float(s) for s in inp.spacing_mm), tuple(int(s) for s in inp.size),  # type: ignore[arg-type]
                       kind, values, float(upper), field_of_view)
        except InputError as e:
            raise ModelError(f"the card of {card.name}: {e}") from None


@dataclass
class ModelInput:
    """A volume prepared for a generative model.

    Attributes:
        tensor: ``(C, z, y, x)`` float32 network input.
        volume: the resampled, cropped volume on the model grid (before normalisation).
        pipeline: inverts maps from the model grid to the input grid.
        scale: intensity divisor (1 for labels).
    """

    tensor: np.ndarray
    volume: Volume
    pipeline: SpatialPipeline
    scale: float = 1.0

    def to_input_grid(self, array_zyx: np.ndarray, nearest: bool = False, fill: float = 0.0, **fields) -> Volume:
        """A model-grid array as a volume on the user's input grid (``fill`` outside the crop)."""
        arr = np.asarray(array_zyx)
        on_model = self.volume.with_array(arr if nearest else arr.astype(np.float32), **fields)
        return self.pipeline.invert(on_model, interpolator="nearest" if nearest else "linear", fill=fill)


def check_image(image: Volume, spec: GridSpec, what: str = "image") -> None:
    """Clear errors for input a generative model cannot use."""
    if not isinstance(image, Volume):
        raise InputError(f"the {what} must be a Volume, got {type(image).__name__}")
    image.require_volumetric(what)
    image.require_finite(what)
    image.require_not_empty(what)
    if spec.input_kind == "labels":
        values = set(np.unique(image.array).astype(int).tolist())
        if not np.allclose(image.array, np.round(image.array)) or not values <= set(spec.label_values):
            raise InputError(
                f"the {what} must be a label volume with values {list(spec.label_values)} "
                f"(this model reads sulcal skeletons), found {sorted(values)[:8]}"
            )


def _scale(arr: np.ndarray, percentile: float) -> float:
    scale = float(np.percentile(arr, percentile))
    if scale <= 0:
        scale = float(np.abs(arr).max()) or 1.0
    return scale


def to_model_grid(image: Volume, spec: GridSpec) -> ModelInput:
    """Reorient, resample, crop/pad and encode ``image`` for a model with grid ``spec``.

    ``spec.whole``: no crop; the volume is only padded (zeros, centred) to at least
    ``spec.size``, and divided by the scale of its centre crop (module docstring), so the
    tensor is ``(1, Z, Y, X)`` with ``Z, Y, X >= spec.shape_zyx``."""
    check_image(image, spec)
    pipe = SpatialPipeline()
    labels = spec.input_kind == "labels"
    vol = pipe.apply(reorient_to_lps, image)
    if not np.allclose(vol.spacing, spec.spacing_mm, rtol=1e-4):
        vol = pipe.apply(resample_to_spacing, vol, spec.spacing_mm, "nearest" if labels else "linear")
    if spec.whole:
        at_least = tuple(max(a, b) for a, b in zip(vol.shape, spec.shape_zyx))
        if at_least != vol.shape:
            vol = pipe.apply(crop_or_pad, vol, at_least, None, 0.0)
        centre = crop_or_pad(vol, spec.shape_zyx, None, 0.0)[0]
        scale = _scale(np.asarray(centre.array, np.float32), spec.percentile)
        return ModelInput((np.asarray(vol.array, np.float32) / scale)[None], vol, pipe, scale)
    if vol.shape != spec.shape_zyx:
        pad = float(spec.label_values[1]) if labels and len(spec.label_values) > 1 else 0.0
        vol = pipe.apply(crop_or_pad, vol, spec.shape_zyx, None, pad)
    arr = np.asarray(vol.array)
    if labels:
        tensor = one_hot(arr, spec.label_values)
        scale = 1.0
    else:
        arr = arr.astype(np.float32)
        scale = _scale(arr, spec.percentile)
        tensor = (arr / scale)[None].astype(np.float32)
    return ModelInput(tensor, vol, pipe, scale)


def stack_padded(tensors: Sequence[np.ndarray]) -> np.ndarray:
    """``(C, Z_i, Y_i, X_i)`` tensors of a whole field of view as one ``(N, C, Z, Y, X)`` array,
    each zero-padded around its centre to the largest extent (training windows are drawn from it)."""
    shape = tuple(max(t.shape[d] for t in tensors) for d in range(1, 4))
    out = np.zeros((len(tensors), tensors[0].shape[0], *shape), np.float32)
    for i, t in enumerate(tensors):
        lo = [(s - e) // 2 for s, e in zip(shape, t.shape[1:])]
        out[i, :, lo[0]:lo[0] + t.shape[1], lo[1]:lo[1] + t.shape[2], lo[2]:lo[2] + t.shape[3]] = t
    return out


def _stack(tensors: Sequence[np.ndarray], spec: GridSpec) -> np.ndarray:
    return stack_padded(tensors) if spec.whole else np.stack(tensors)


def one_hot(labels_zyx: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``(z, y, x)`` labels -> ``(len(values), z, y, x)`` float32 one-hot."""
    arr = np.round(np.asarray(labels_zyx)).astype(int)
    return np.stack([(arr == v) for v in values]).astype(np.float32)


def decode_labels(probs: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``(C, z, y, x)`` class scores -> ``(z, y, x)`` label values (argmax)."""
    return np.asarray(values, dtype=np.int16)[np.argmax(probs, axis=0)]


# ---------------------------------------------------------------------------- training sets
def brain_training_set(n: int, spec: GridSpec, seed: int = 0, pathological: Optional[bool] = False,
                       shape: Sequence[int] = (48, 64, 64), **phantom_kwargs) -> Tuple[np.ndarray, List]:
    """``n`` brain-lesion phantoms prepared for ``spec``: ``(N, C, z, y, x)`` and the cases.

    ``pathological=False`` gives healthy brains (what an anomaly model is trained on),
    ``True`` lesioned ones, ``None`` half and half. ``phantom_kwargs`` go to
    :func:`clinicalai.phantoms.brain.brain_case` (e.g. ``lesion_radius_mm``).
    """
    cases = brain_cases(n, seed, pathological, shape, **phantom_kwargs)
    return prepare_cases(cases, spec), cases


def brain_cases(n: int, seed: int = 0, pathological: Optional[bool] = False,
                shape: Sequence[int] = (48, 64, 64), **phantom_kwargs) -> List:
    """The ``n`` brain-lesion phantoms of :func:`brain_training_set`, not yet on a model grid."""
    return [brain_case(seed * 100003 + i, shape=shape, pathological=_lesioned(i, pathological), **phantom_kwargs)
            for i in range(n)]


def _lesioned(i: int, pathological: Optional[bool]) -> bool:
    """Whether the ``i``-th case of a set is lesioned: ``pathological``, or every odd one (``None``)."""
    return (i % 2 == 1) if pathological is None else pathological


def prepare_cases(cases: Sequence, spec: GridSpec) -> np.ndarray:
    """The cases' images on ``spec``'s grid, stacked: ``(N, C, z, y, x)``."""
    return _stack([to_model_grid(c.image, spec).tensor for c in cases], spec)


def mni_training_set(n: int, spec: GridSpec, seed: int = 0,
                     pathological: Optional[bool] = False, contrast: str = "FLAIR") -> Tuple[np.ndarray, List]:
    """``n`` MNI-template phantoms of the TRAINING stream prepared for ``spec`` (FLAIR-like, or
    T1-like with ``contrast="T1"``): ``(N, C, z, y, x)`` and the cases.

    Drawn from :func:`clinicalai.phantoms.mni.mni_brain_case` with ``stream="train"`` (never a
    held-out evaluation case, whatever the seed), seeds ``seed * 100003 + i`` as in
    :func:`brain_training_set`, at the model's voxel size ``spec.spacing_mm`` (the phantom
    renders partial volume at that size), FLAIR-like like the held-out anomaly evaluation,
    the other choices (skull, oblique direction for half, bias, noise, deformation) from the
    seed. ``pathological``: as in :func:`brain_training_set`.
    """
    from ..phantoms.mni import mni_brain_case

    cases = [mni_brain_case(seed * 100003 + i, pathological=_lesioned(i, pathological), contrast=contrast,
                            spacing=spec.spacing_mm, stream="train") for i in range(n)]
    return prepare_cases(cases, spec), cases


def folder_training_set(folder, spec: GridSpec, limit: Optional[int] = None) -> np.ndarray:
    """Every NIfTI / NRRD image in ``folder`` prepared for ``spec``: ``(N, C, z, y, x)``."""
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"training data folder not found: {folder}")
    files = sorted(p for p in folder.iterdir()
                   if p.name.lower().endswith((".nii", ".nii.gz", ".nrrd")) and not p.name.endswith(".seg.nrrd"))
    if limit:
        files = files[:limit]
    if len(files) < 2:
        raise InputError(f"{folder} holds {len(files)} NIfTI/NRRD images; training needs at least 2")
    return _stack([to_model_grid(read_volume(f), spec).tensor for f in files], spec)

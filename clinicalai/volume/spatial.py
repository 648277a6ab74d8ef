"""Spatial steps between the input grid and a network's grid, each with its inverse.

Every function returns ``(output, inverse)`` where ``inverse(volume_on_output_grid)`` puts a
volume (a mask, a heat map) back onto the *input* grid: same shape, spacing, origin and
direction, exactly. Reorientation and crop/pad are exact inverses of each other on values
too; resampling is inverted by resampling back onto the recorded input grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .core import Grid, Volume

Inverse = Callable[[Volume], Volume]

INTERPOLATORS = ("linear", "nearest", "bspline", "label")
#: nearest-neighbour ties are broken towards the higher index: samples are taken this fraction
#: of a source voxel further along each axis (float noise in geometry is ~1e-7 of a coordinate,
#: 1e-5 mm at 100 mm; this is 2e-3 mm for 2 mm voxels, and moves no sample off a voxel otherwise)
NEAREST_TIE_NUDGE = 1e-3


def _sitk_interpolator(name: str):
    import SimpleITK as sitk

    table = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
        "label": sitk.sitkLabelGaussian,
    }
    if name not in table:
        raise ValueError(f"interpolator must be one of {INTERPOLATORS}, got {name!r}")
    return table[name]


def resample_to_grid(volume: Volume, grid: Grid, interpolator: str = "linear", default: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``grid`` (physical space is preserved; outside -> ``default``)."""
    import SimpleITK as sitk

    src = volume.to_sitk()
    if interpolator in ("nearest", "label"):
        out_type = src.GetPixelID()
    else:
        out_type = sitk.sitkFloat32 if volume.array.dtype != np.float64 else sitk.sitkFloat64
        if src.GetPixelID() != out_type:
            src = sitk.Cast(src, out_type)
    if interpolator == "nearest":
        # a sample midway between two voxels (a 2 mm grid over a 1 mm one: every sample; a 4.8 mm
        # PET under an 8 mm network grid: every fifth plane) was decided by float noise, and a
        # DICOM series and its NIfTI, whose spacings differ in the last digits, got masks a voxel
        # apart; the source moved back by NEAREST_TIE_NUDGE of a voxel, a tie goes up, always
        d = np.asarray(src.GetDirection(), dtype=float).reshape(3, 3)
        nudge = d @ (NEAREST_TIE_NUDGE * np.asarray(src.GetSpacing(), dtype=float))
        src.SetOrigin(tuple(float(v) for v in np.asarray(src.GetOrigin(), dtype=float) - nudge))
    ref = sitk.Image([int(s) for s in reversed(grid.shape)], out_type)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(grid.direction)
    out = sitk.Resample(src, ref, sitk.Transform(), _sitk_interpolator(interpolator), float(default), out_type)
    result = Volume.from_sitk(out, modality=volume.modality, units=volume.units)
    result.metadata = dict(volume.metadata)
    return result


def resample_to_spacing(
    volume: Volume, spacing: Sequence[float], interpolator: str = "linear"
) -> Tuple[Volume, Inverse]:
    """Resample to ``spacing`` (mm, x y z) over the same physical extent.

    The new grid keeps origin and direction; its size is ``round(size * old / new)``.
    The inverse resamples back onto the recorded input grid (``linear`` for maps; pass
    ``interpolator="nearest"`` to the returned callable's keyword for labels).
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(s <= 0 for s in spacing):
        raise InputError(f"target spacing must be 3 positive values, got {spacing}")
    in_grid = volume.grid
    size_xyz = np.array(list(reversed(in_grid.shape)), dtype=float)
    new_size_xyz = np.maximum(1, np.round(size_xyz * np.array(in_grid.spacing) / np.array(spacing))).astype(int)
    # keep the physical centre of the volume where it is: with the rounded size the new grid
    # may be a fraction of a voxel wider or narrower, split evenly on both sides
    d = in_grid.direction_matrix
    old_sp, new_sp = np.array(in_grid.spacing), np.array(spacing)
    centre_offset = (size_xyz - 1) * old_sp / 2.0 - (new_size_xyz - 1) * new_sp / 2.0
    origin = np.array(in_grid.origin) + d @ centre_offset
    out_grid = Grid(tuple(int(s) for s in reversed(new_size_xyz)), spacing, tuple(origin), in_grid.direction)
    out = resample_to_grid(volume, out_grid, interpolator)

    def inverse(v: Volume, interpolator: str = "linear") -> Volume:
        return resample_to_grid(v, in_grid, interpolator)

    return out, inverse


#: patient axis and sign (in LPS) of each axis code letter
_CODE_AXES = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


def check_axcodes(axcodes: str) -> str:
    """``axcodes`` upper-cased when it names one of L/R, P/A, S/I per axis (``RAS``, ``LPS``,
    ``PLI``, ...); else :class:`InputError`."""
    codes = str(axcodes).upper()
    if len(codes) != 3 or any(c not in _CODE_AXES for c in codes) or sorted(_CODE_AXES[c][0] for c in codes) != [0, 1, 2]:
        raise InputError(f"axis codes must name each of L/R, P/A, S/I once (e.g. 'RAS'), got {axcodes!r}")
    return codes


def _axis_assignment(direction: np.ndarray, axcodes: str) -> Tuple[List[int], List[int]]:
    """For each new index axis n (pointing along ``axcodes[n]``), the old index axis
    (i/j/k -> 0/1/2) closest to it and the sign that makes it point that way.

    The assignment maximises the total alignment over all six permutations; a greedy choice
    axis by axis can give a worse (or, for strongly oblique scans, a wrong) pairing.
    """
    import itertools

    targets = [_CODE_AXES[c] for c in axcodes.upper()]
    d = np.abs(np.asarray(direction, dtype=float))
    best = max(itertools.permutations(range(3)),
               key=lambda perm: sum(d[targets[n][0], perm[n]] for n in range(3)))
    order = list(best)
    signs = [1 if direction[targets[n][0], order[n]] * targets[n][1] >= 0 else -1 for n in range(3)]
    return order, signs


def reorient_to_axcodes(volume: Volume, axcodes: str = "LPS") -> Tuple[Volume, Inverse]:
    """Permute/flip axes so index axes i, j, k point (closest to) ``axcodes`` (``"LPS"``,
    ``"RAS"`` as MONAI's ``Orientation``, ...).

    Pure array permutation and flips: values are exact and the physical position of every
    voxel is unchanged. The inverse restores the original array and geometry exactly.
    """
    order, signs = _axis_assignment(volume.direction, check_axcodes(axcodes))
    in_grid = volume.grid
    arr = volume.array  # (k, j, i)
    # new index axis n (0=i,1=j,2=k) takes old index axis order[n]
    zyx_axes = [2 - order[n] for n in (2, 1, 0)]
    out_arr = np.transpose(arr, zyx_axes)
    old_spacing = np.array(volume.spacing)
    new_dir = np.zeros((3, 3))
    new_spacing = np.zeros(3)
    origin = np.array(volume.origin, dtype=float)
    for n in range(3):
        a = order[n]
        new_dir[:, n] = volume.direction[:, a] * signs[n]
        new_spacing[n] = old_spacing[a]
        if signs[n] < 0:
            size_a = volume.array.shape[2 - a]
            origin = origin + volume.direction[:, a] * old_spacing[a] * (size_a - 1)
    for n in range(3):
        if signs[n] < 0:
            out_arr = np.flip(out_arr, axis=2 - n)
    out = Volume(
        np.ascontiguousarray(out_arr), spacing=tuple(new_spacing), origin=tuple(origin), direction=new_dir,
        modality=volume.modality, units=volume.units, metadata=dict(volume.metadata),
    )

    def inverse(v: Volume) -> Volume:
        a = v.array
        for n in range(3):
            if signs[n] < 0:
                a = np.flip(a, axis=2 - n)
        inv_axes = np.argsort(zyx_axes)
        back = np.ascontiguousarray(np.transpose(a, inv_axes))
        return Volume.from_grid(in_grid, back, modality=v.modality, units=v.units, metadata=dict(v.metadata))

    return out, inverse


def reorient_to_lps(volume: Volume) -> Tuple[Volume, Inverse]:
    """:func:`reorient_to_axcodes` to ``LPS``: index axes i, j, k point L, P, S."""
    return reorient_to_axcodes(volume, "LPS")


def crop_or_pad(
    volume: Volume,
    size: Sequence[int],
    center_index: Optional[Sequence[float]] = None,
    pad_value: float = 0.0,
) -> Tuple[Volume, Inverse]:
    """Crop and/or zero-pad to ``size`` (z, y, x) voxels around ``center_index`` (z, y, x;
    default: the array centre). The origin moves so every kept voxel keeps its position.

    The inverse places a volume of shape ``size`` back into the input grid, filling what was
    cropped away with ``pad_value`` (the cropped-away voxels were never seen).
    """
    size = tuple(int(s) for s in size)
    if len(size) != 3 or any(s <= 0 for s in size):
        raise InputError(f"crop/pad size must be 3 positive integers, got {size}")
    in_grid = volume.grid
    shape = np.array(volume.shape)
    center = (shape - 1) / 2.0 if center_index is None else np.asarray(center_index, dtype=float)
    start = np.round(center - (np.array(size) - 1) / 2.0).astype(int)  # in input index (z, y, x)
    out = np.full(size, pad_value, dtype=volume.array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + np.array(size), shape)
    dst_lo = src_lo - start
    dst_hi = dst_lo + np.maximum(src_hi - src_lo, 0)
    if np.all(src_hi > src_lo):
        out[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = volume.array[
            src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]
        ]
    start_ijk = start[::-1].astype(float)
    new_origin = np.array(volume.origin) + volume.direction @ (np.array(volume.spacing) * start_ijk)
    result = Volume(
        out, spacing=volume.spacing, origin=tuple(new_origin), direction=volume.direction.copy(),
        modality=volume.modality, units=volume.units, metadata=dict(volume.metadata),
    )

    def inverse(v: Volume, fill: float = pad_value) -> Volume:
        if v.shape != size:
            raise ValueError(f"inverse crop/pad expects shape {size}, got {v.shape}")
        back = np.full(in_grid.shape, fill, dtype=v.array.dtype)
        if np.all(src_hi > src_lo):
            back[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]] = v.array[
                dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]
            ]
        return Volume.from_grid(in_grid, back, modality=v.modality, units=v.units, metadata=dict(v.metadata))

    return result, inverse


#: how far (in voxels) a voxel centre may be from the target lattice and still be on it
LATTICE_TOLERANCE_VOXELS = 1e-3


def place_on_grid(volume: Volume, grid: Grid, what: str = "mask") -> Volume:
    """Put ``volume`` onto ``grid`` voxel for voxel, zeros around it, when its voxels lie on
    ``grid``'s lattice: a DICOM SEG holding only the segmented slices, a mask cropped to its
    extent, or one stored with its axes flipped or swapped. Nothing is interpolated, so labels
    stay labels and every voxel keeps its position.

    Args:
        volume: the volume to place (typically a label map).
        grid: the target grid (typically the image the mask was drawn on).
        what: what ``volume`` is, for messages.

    Raises:
        InputError: the voxels are not on ``grid``'s lattice (another spacing, rotation or a
            shift of part of a voxel), or some reach outside ``grid``.
    """
    to_grid = np.linalg.inv(grid.index_to_lps()) @ volume.index_to_lps()
    rotation, shift = to_grid[:3, :3], to_grid[:3, 3]
    signs = np.round(rotation)
    tol = LATTICE_TOLERANCE_VOXELS
    on_lattice = (
        np.allclose(rotation, signs, atol=tol)
        and np.all(np.abs(signs).sum(axis=0) == 1)
        and np.all(np.abs(signs).sum(axis=1) == 1)
        and np.allclose(shift, np.round(shift), atol=tol)
    )
    if not on_lattice:
        raise InputError(
            f"the {what} and the image are on different grids (image {grid.shape}, spacing {tuple(round(s, 4) for s in grid.spacing)}; "
            f"{what} {volume.shape}, spacing {tuple(round(s, 4) for s in volume.spacing)}) and its voxels are not "
            f"on the image's voxels; give the image the {what} was drawn on"
        )
    source_xyz = volume.array.transpose(2, 1, 0)  # index order (i, j, k) = (x, y, z)
    source_axis = [int(np.flatnonzero(signs[a])[0]) for a in range(3)]  # grid axis a <- volume axis
    placed = source_xyz.transpose(source_axis)
    starts = []
    for a in range(3):
        n = placed.shape[a]
        if signs[a, source_axis[a]] < 0:
            placed = np.flip(placed, axis=a)
            starts.append(int(round(shift[a])) - (n - 1))
        else:
            starts.append(int(round(shift[a])))
    grid_xyz = tuple(reversed(grid.shape))
    if any(s < 0 or s + placed.shape[a] > grid_xyz[a] for a, s in enumerate(starts)):
        raise InputError(f"the {what} reaches outside the image ({volume.shape} voxels from index "
                         f"{tuple(reversed(starts))} of an image of {grid.shape}); give the image the {what} was drawn on")
    out_xyz = np.zeros(grid_xyz, dtype=volume.array.dtype)
    out_xyz[starts[0]:starts[0] + placed.shape[0], starts[1]:starts[1] + placed.shape[1],
            starts[2]:starts[2] + placed.shape[2]] = placed
    return Volume.from_grid(grid, np.ascontiguousarray(out_xyz.transpose(2, 1, 0)), modality=volume.modality,
                            units=volume.units, metadata=dict(volume.metadata))


@dataclass
class SpatialPipeline:
    """A chain of spatial steps applied in order, inverted in reverse order.

    >>> pipe = SpatialPipeline()
    >>> net_input = pipe.apply(reorient_to_lps, volume)
    >>> net_input = pipe.apply(resample_to_spacing, net_input, (2, 2, 2))
    >>> heat_map_on_input_grid = pipe.invert(heat_map_in_network_space)
    """

    inverses: List[Inverse] = field(default_factory=list)

    def apply(self, step: Callable[..., Tuple[Volume, Inverse]], volume: Volume, *args, **kwargs) -> Volume:
        out, inverse = step(volume, *args, **kwargs)
        self.inverses.append(inverse)
        return out

    def invert(self, volume: Volume, **kwargs) -> Volume:
        """Map ``volume`` from the last step's grid back to the first input grid.

        ``kwargs`` (e.g. ``interpolator="nearest"`` for labels) go to the steps that accept them.
        """
        import inspect

        for inverse in reversed(self.inverses):
            params = inspect.signature(inverse).parameters
            volume = inverse(volume, **{k: v for k, v in kwargs.items() if k in params})
        return volume

"""The :class:`Volume` type: a voxel array with its exact physical geometry.

Conventions (those of ITK / SimpleITK, the LPS patient frame):

- ``array`` is indexed ``(z, y, x)`` = ``(k, j, i)``, as ``sitk.GetArrayFromImage`` returns it.
- ``spacing`` and ``origin`` are in ITK order ``(x, y, z)`` and millimetres.
- ``direction`` is a 3x3 matrix whose *columns* are the LPS directions of the i, j, k axes.

The physical LPS position of voxel index ``(i, j, k)`` is
``origin + direction @ (spacing * (i, j, k))``. Slicer's RAS frame is handled only in
``clinicalai.mrml``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, TimeSeriesError

Vec3 = Tuple[float, float, float]


def time_series_error(time_points: int, what: str = "this is a 4D image") -> TimeSeriesError:
    """The one refusal of a 4D file (fMRI, dynamic PET, cine), whichever reader found it;
    ``what`` names it (a dynamic PET DICOM series names its folder)."""
    return TimeSeriesError(
        f"{what} with {time_points} time points; choose one with --frame K (K from 0 to "
        f"{time_points - 1}; segment, explain, anomaly, convert) or extract it first "
        f"(clinicalai convert FILE -o frame.nii.gz --frame K)", time_points
    )


def _vec3(values: Sequence[float], what: str) -> Vec3:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise InputError(f"{what} must have 3 values (x, y, z), got {len(out)}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Grid:
    """The geometry of a voxel grid without its values: shape ``(z, y, x)`` and LPS geometry."""

    shape: Tuple[int, int, int]
    spacing: Vec3
    origin: Vec3
    direction: Tuple[float, ...]  # 9 values, row-major, as ``sitk.Image.GetDirection()``

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def allclose(self, other: "Grid", atol: float = 1e-6) -> bool:
        return (
            tuple(self.shape) == tuple(other.shape)
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )


@dataclass
class Volume:
    """A 3D image (or mask, or map) on an exact physical grid.

    Attributes:
        array: voxel values, shape ``(z, y, x)``.
        spacing: voxel size in mm, ITK order ``(x, y, z)``.
        origin: LPS position in mm of voxel ``(0, 0, 0)``, ITK order.
        direction: 3x3 matrix, columns = LPS directions of the i, j, k axes.
        modality: e.g. ``"MR"``, ``"CT"``, ``"PT"``, ``"SEG"``; ``None`` if unknown.
        units: value units, e.g. ``"BQML"``, ``"SUV"``, ``"label"``; ``None`` if unknown.
        metadata: anything else the workflows need (DICOM tags by keyword, label names, ...).
    """

    array: np.ndarray
    spacing: Vec3 = (1.0, 1.0, 1.0)
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: Optional[str] = None
    units: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise InputError(
                f"a volume needs 3 dimensions (z, y, x), this image has {self.array.ndim}"
            )
        self.spacing = _vec3(self.spacing, "spacing")
        self.origin = _vec3(self.origin, "origin")
        d = np.asarray(self.direction, dtype=float)
        if d.size != 9:
            raise InputError("direction must be a 3x3 matrix")
        self.direction = d.reshape(3, 3)
        if any(s <= 0 or not np.isfinite(s) for s in self.spacing):
            raise InputError(f"spacing must be positive and finite, got {self.spacing}")

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(
            self.shape,
            self.spacing,
            self.origin,
            tuple(float(v) for v in self.direction.reshape(-1)),
        )

    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` to LPS millimetres."""
        return self.grid.index_to_lps()

    def same_grid(self, other: "Volume | Grid", atol: float = 1e-6) -> bool:
        other_grid = other.grid if isinstance(other, Volume) else other
        return self.grid.allclose(other_grid, atol=atol)

    # ------------------------------------------------------------------ derived volumes
    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A new volume with ``array`` on exactly this grid (metadata copied)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} != volume shape {self.array.shape}")
        fields = dict(
            spacing=self.spacing,
            origin=self.origin,
            direction=self.direction.copy(),
            modality=self.modality,
            units=self.units,
            metadata=copy.deepcopy(self.metadata),
        )
        fields.update(changes)
        return Volume(array, **fields)

    def copy(self) -> "Volume":
        return self.with_array(self.array.copy())

    @classmethod
    def from_grid(cls, grid: Grid, array: np.ndarray, **kwargs: Any) -> "Volume":
        return cls(
            np.asarray(array).reshape(grid.shape),
            spacing=grid.spacing,
            origin=grid.origin,
            direction=np.asarray(grid.direction).reshape(3, 3),
            **kwargs,
        )

    # ------------------------------------------------------------------ SimpleITK bridge
    def to_sitk(self):
        """A SimpleITK image with the same values and geometry."""
        import SimpleITK as sitk

        arr = self.array
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(float(v) for v in self.direction.reshape(-1)))
        return image

    @classmethod
    def from_sitk(cls, image, **kwargs: Any) -> "Volume":
        """A volume from a 3D SimpleITK image (a 2D image becomes one slice, z = 1)."""
        import SimpleITK as sitk

        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"only scalar images are supported, this one has "
                f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
            )
        dim = image.GetDimension()
        if dim == 2:
            image = sitk.JoinSeries(image)
            kwargs.setdefault("metadata", {})["dimension_on_disk"] = 2
        elif dim == 4:
            size = image.GetSize()
            if size[3] != 1:
                raise time_series_error(size[3])
            image = sitk.Extract(image, size[:3] + (0,), (0, 0, 0, 0))
        elif dim != 3:
            raise InputError(f"a volume needs 3 dimensions, this image has {dim}")
        array = sitk.GetArrayFromImage(image)
        return cls(
            array,
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.asarray(image.GetDirection()).reshape(3, 3),
            **kwargs,
        )

    # ------------------------------------------------------------------ checks
    def require_finite(self, what: str = "image") -> "Volume":
        """Raise a clear error when the volume holds NaN or infinite values."""
        if np.issubdtype(self.array.dtype, np.floating) and not np.all(np.isfinite(self.array)):
            bad = int(np.count_nonzero(~np.isfinite(self.array)))
            raise InputError(f"the {what} has {bad} voxels that are NaN or infinite")
        return self

    def require_volumetric(self, what: str = "image", min_slices: int = 2) -> "Volume":
        """Raise a clear error for a 2D image (one slice) where a volume is needed."""
        if self.array.shape[0] < min_slices or self.metadata.get("dimension_on_disk") == 2:
            raise InputError(
                f"the {what} is a 2D image ({self.array.shape[2]}x{self.array.shape[1]}); "
                "a 3D volume is needed"
            )
        return self

    def require_not_empty(self, what: str = "image") -> "Volume":
        """Raise a clear error for an empty or constant image."""
        if self.array.size == 0:
            raise InputError(f"the {what} has no voxels")
        if np.all(self.array == self.array.flat[0]):
            raise InputError(f"the {what} is constant (all voxels {self.array.flat[0]}); nothing to analyse")
        return self

    def __repr__(self) -> str:  # keeps logs short (no array dump)
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
            f"origin={self.origin}, modality={self.modality}, units={self.units})"
        )

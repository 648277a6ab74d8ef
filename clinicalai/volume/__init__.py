"""Volumes with exact geometry: the :class:`Volume` type, file I/O and invertible spatial steps."""

from .core import Grid, Volume
from .integrity import check_image_file, max_voxel_bytes
from .io import image_format, list_dicom_series, read_dicom_series, read_volume, write_volume
from .spatial import SpatialPipeline, crop_or_pad, place_on_grid, reorient_to_axcodes, reorient_to_lps, resample_to_grid, resample_to_spacing

__all__ = [
    "Grid",
    "Volume",
    "check_image_file",
    "image_format",
    "list_dicom_series",
    "max_voxel_bytes",
    "read_dicom_series",
    "read_volume",
    "write_volume",
    "SpatialPipeline",
    "crop_or_pad",
    "place_on_grid",
    "reorient_to_axcodes",
    "reorient_to_lps",
    "resample_to_grid",
    "resample_to_spacing",
]

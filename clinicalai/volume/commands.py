"""``clinicalai convert``: one volume from any readable input (a DICOM series, a SEG, one frame of a
4D NIfTI, NIfTI-2) into NIfTI, NRRD, ``.seg.nrrd`` or a DICOM series folder, with the checks and
geometry of :func:`~clinicalai.volume.read_volume`. It is the step the readers' refusals point
to (a 4D file: pick a frame; a study folder: pick a series), and a DICOM-to-NIfTI converter for
researchers that keeps exactly the geometry every other command reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..progress import print_warnings
from ..cli import add_input_choice, read_chosen_input
from .io import write_volume

#: output endings ``convert`` writes (a name without an ending is a DICOM series folder)
OUTPUT_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd")


def _run_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    name = out.name.lower()
    if name.endswith(".dcm"):
        raise InputError(f"{out.name}: convert writes NIfTI, NRRD, .seg.nrrd or a DICOM series folder (a name without "
                         "an ending); a DICOM SEG is written by segment / correct -o MASK.dcm")
    if "." in name and not name.endswith(OUTPUT_SUFFIXES):
        raise InputError(f"{out.name}: the output must end in {', '.join(OUTPUT_SUFFIXES)}, or have no ending (a DICOM series folder)")
    volume = read_chosen_input(args.input, args)
    segments = volume.metadata.get("segments") if name.endswith(".seg.nrrd") else None
    write_volume(volume, out, segments=segments)
    spacing = " x ".join(f"{s:g}" for s in volume.spacing)
    print(f"wrote {out}: {' x '.join(str(n) for n in reversed(volume.shape))} voxels of {spacing} mm"
          + (f", {volume.modality}" if volume.modality else ""))
    print_warnings(volume.metadata.get("warnings"))
    return 0


def register(commands) -> None:
    p = commands.top.add_parser(
        "convert", help="one volume from DICOM / SEG / a 4D frame / NIfTI-2 into NIfTI, NRRD or a DICOM series",
        description="Read INPUT as every command reads it (checks, geometry) and write it to OUT: NIfTI (.nii, "
        ".nii.gz), NRRD (.nrrd, .seg.nrrd for a label map with its segments) or a DICOM series folder (a name "
        "without an ending).")
    p.add_argument("input", metavar="INPUT", help="a NIfTI / NRRD file, a DICOM folder or file, a DICOM SEG")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the file (or DICOM folder) to write")
    add_input_choice(p)
    p.set_defaults(func=_run_convert)

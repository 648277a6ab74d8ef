"""A ``--data`` folder of phantoms for ``clinicalai web``: what the browser tests
(``Testing/web/conftest.py``) and ``scripts/screenshots.py`` open in the page.

Importing this module imports neither trame nor Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

#: the lesion masks are grey: colour in a slice view can then only come from a heat map
GREY_LESION = [{"name": "lesion", "value": 1, "color": (0.6, 0.6, 0.6)}]


def write_sample_data(folder: Path) -> Dict[str, Any]:
    """Write the phantoms the web panels run on into ``folder`` (created if needed).

    Files (all deterministic):

    * ``cardiac.nii.gz``: short-axis cardiac MRI (``cardiac_case(0)``, (z, y, x), mm spacing);
      ``cardiac_bad.seg.nrrd``: its RV / MYO / LV mask damaged (holes, blobs, missing
      structures on every slice) for the corrector; ``cardiac_dicom/``: the image as a DICOM
      series folder;
    * ``pet.nii.gz``: brain 18F-FDOPA PET in SUV with a recurrence lesion (``pet_case(3)``);
      ``pet_lesion.seg.nrrd``: its lesion VOI (grey);
    * ``brain.nii.gz``: brain MRI with a lesion (``brain_case(1)``); ``brain_lesion.seg.nrrd``:
      the lesion mask (grey);
    * masks as plain NIfTI, as other tools write them ("Open as" guesses them):
      ``brain_lesion_mask.nii.gz``, the brain lesion as 0.0 / 1.0 float32 on the brain's grid;
      ``cardiac_labels.nii.gz``, the cardiac RV / MYO / LV labels (uint8 1 / 2 / 3).

    Returns ``{"cardiac": CardiacCase, "pet": PetCase, "brain": BrainCase}``, the phantoms
    written.
    """
    # the phantoms and the corruptions need scipy: loaded when sample data is asked for
    from ..phantoms.brain import brain_case
    from ..phantoms.cardiac import cardiac_case, cardiac_segments
    from ..phantoms.pet import pet_case
    from ..segcorrect.corruptions import corrupt_volume
    from ..volume.io import write_volume

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cardiac = cardiac_case(0)
    write_volume(cardiac.image, folder / "cardiac.nii.gz")
    # a damaged mask of that image: the corrector has something to fix on several slices
    bad, _ = corrupt_volume(np.asarray(cardiac.labels.array), seed=1, probability=1.0, kinds=["holes", "blobs", "missing"])
    write_volume(cardiac.labels.with_array(bad.astype(np.uint8)), folder / "cardiac_bad.seg.nrrd", segments=cardiac_segments())
    write_volume(cardiac.image, folder / "cardiac_dicom")  # no suffix: a DICOM series folder
    pet = pet_case(3, recurrence=True)
    write_volume(pet.suv, folder / "pet.nii.gz")
    lesion_voi = (np.asarray(pet.lesion.array) > 0).astype(np.uint8)
    write_volume(pet.suv.with_array(lesion_voi), folder / "pet_lesion.seg.nrrd", segments=GREY_LESION)
    brain = brain_case(1, pathological=True)
    write_volume(brain.image, folder / "brain.nii.gz")
    lesion = brain.image.with_array((np.asarray(brain.lesion.array) > 0).astype(np.uint8))
    write_volume(lesion, folder / "brain_lesion.seg.nrrd", segments=GREY_LESION)
    write_volume(lesion.with_array(lesion.array.astype(np.float32)), folder / "brain_lesion_mask.nii.gz")
    write_volume(cardiac.labels.with_array(np.asarray(cardiac.labels.array).astype(np.uint8)), folder / "cardiac_labels.nii.gz")
    return {"cardiac": cardiac, "pet": pet, "brain": brain}

"""A PET training set that mixes both brain PET phantom families.

The bundled PetRecurrence folds learned on :mod:`clinicalai.phantoms.pet` alone (ellipsoid heads,
lesions of 10-18 mm radius) missed the sub-mL recurrences of the MNI-template family and pointed
their Grad-CAM 100 mm away from them (``docs/heldout.md``). This writer gives a trainer both:
ellipsoid phantoms (scanners ``A`` / ``B``) and MNI-template phantoms (scanner ``MNI``: real
anatomy, lesions of 5-20 mm radius and TBR 1.8-4.0, asymmetric striata, 2-4 mm oblique grids)
drawn ONLY from the MNI family's ``"train"`` stream (:data:`clinicalai.phantoms.mni.STREAMS`), so no
case of the held-out evaluation (stream ``"heldout"``) is ever trained on.

Labels alternate (balanced, as the demo's data set), and the family follows the pair index
``i // 2`` so each family gets the same number of recurrences and non-recurrences. The CSV and
the stratified test split are those of :func:`clinicalai.phantoms.pet.write_pet_dataset` (the
``scanner`` column says the family).

The MNI-template cases carry the licence of the ICBM152 templates
(:data:`clinicalai.phantoms.mni.MNI_LICENSE`); a model card trained on them must quote it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..errors import InputError
from .mni import MNI_LICENSE, TEMPLATE_NAME, mni_pet_case
from .pet import PetCase, pet_case, write_pet_dataset

#: the only MNI stream a trainer may draw from
TRAIN_STREAM = "train"
#: seed of case ``i`` in a data set written with ``seed``: that of write_pet_dataset (one rule for both families)
SEED_STRIDE = 100_003


def is_mni_pair(pair: int, mni_fraction: float) -> bool:
    """Whether label pair ``pair`` (cases ``2 pair`` and ``2 pair + 1``) comes from the MNI family:
    an even spread of ``mni_fraction`` of the pairs (0: none, 1: all)."""
    return int((pair + 1) * mni_fraction) > int(pair * mni_fraction)


def mixed_pet_case(i: int, seed: int = 0, mni_fraction: float = 0.5) -> PetCase:
    """Case ``i`` of the mixed data set written with ``seed``: recurrence when ``i`` is odd; an
    MNI-template case of the ``"train"`` stream when :func:`is_mni_pair` says so, else an
    ellipsoid case on scanner ``A`` or ``B`` (alternating pairs), both with phantom seed
    ``seed * 100003 + i``."""
    rec, pair, case_seed = bool(i % 2), i // 2, seed * SEED_STRIDE + i
    if is_mni_pair(pair, mni_fraction):
        return mni_pet_case(case_seed, recurrence=rec, stream=TRAIN_STREAM)
    return pet_case(case_seed, recurrence=rec, scanner="AB"[pair % 2])


def data_description(n: int, seed: int, mni_fraction: float) -> Dict[str, Any]:
    """A model card's ``training`` entries for a mixed data set: ``data`` (what was drawn),
    ``family`` (``"mix"``) and ``template_licence`` (the ICBM152 notice, which must travel with
    a model trained on the template)."""
    n_mni = sum(is_mni_pair(i // 2, mni_fraction) for i in range(n))
    text = (f"{n} balanced PET phantoms (seed {seed}, phantom seeds {seed * SEED_STRIDE}-{seed * SEED_STRIDE + n - 1}): "
            f"{n - n_mni} clinicalai.phantoms.pet (ellipsoid heads, scanners A / B) and {n_mni} "
            f"clinicalai.phantoms.mni on the {TEMPLATE_NAME} template, training stream only (never a held-out case)")
    return {"data": text, "family": "mix", "template_licence": MNI_LICENSE}


def write_mixed_pet_dataset(
    out_dir: "str | Path",
    n: int = 120,
    seed: int = 0,
    mni_fraction: float = 0.5,
    test_fraction: float = 0.2,
    progress: Optional[Callable[[float, str], None]] = None,
) -> Path:
    """Write ``n`` PET phantoms of both families (:func:`mixed_pet_case`) as NIfTI in Bq/mL with
    brain masks, and ``out_dir/pet_cases.csv`` (:func:`~clinicalai.phantoms.pet.write_pet_dataset`'s
    columns; scanner ``A``, ``B`` or ``MNI``); returns the CSV path.

    Raises:
        InputError: ``mni_fraction`` outside [0, 1] (nothing written).
    """
    if not 0.0 <= float(mni_fraction) <= 1.0:
        raise InputError(f"mni_fraction must lie in [0, 1], got {mni_fraction}")
    return write_pet_dataset(out_dir, n=n, seed=seed, test_fraction=test_fraction, balanced=True, progress=progress,
                             make_case=lambda i: mixed_pet_case(i, seed, mni_fraction))


__all__ = ["TRAIN_STREAM", "data_description", "is_mni_pair", "mixed_pet_case", "write_mixed_pet_dataset"]

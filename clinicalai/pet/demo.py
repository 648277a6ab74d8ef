"""PetRecurrence demo: a recurrence phantom written as a DICOM PT series, read back, classified
by the bundled fold models, with Grad-CAM, the attention check and SUVmax / TBR."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..outputs import write_json
from ..phantoms.pet import pet_case, write_pet_dicom
from ..progress import ProgressCallback, report, scaled
from ..volume import read_volume, write_volume
from .classes import POSITIVE_CLASS
from .workflow import load_pet_models, predict_pet


def run_demo(out_dir: Path, progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Writes ``pet_dicom/`` (input), ``brain_mask.nii.gz``, ``gradcam.nii.gz``,
    ``lesion_voi.seg.nrrd`` (when found) and ``result.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report(progress, 0.0, "PET phantom (recurrence) as DICOM")
    case = pet_case(seed=4242, recurrence=True, scanner="A")
    write_pet_dicom(case.image, out / "pet_dicom")
    pet = read_volume(out / "pet_dicom")
    models = load_pet_models(device="cpu")
    result = predict_pet(pet, models, cam=True, progress=scaled(progress, 0.1, 0.9))
    write_volume(result.brain_mask, out / "brain_mask.nii.gz")
    write_volume(result.cam, out / "gradcam.nii.gz")
    if result.lesion_mask is not None:
        write_volume(result.lesion_mask, out / "lesion_voi.seg.nrrd")
    summary = result.to_dict()
    summary["truth"] = {"label": POSITIVE_CLASS, "tbr_true": round(case.tbr_true, 3)}
    write_json(summary, out / "result.json")
    report(progress, 1.0, "done")
    return {
        "probability_recurrence": summary["probability_recurrence"],
        "label": result.label,
        "truth": POSITIVE_CLASS,
        "TBRmax": summary["static"]["TBRmax"],
        "cam_inside_brain_fraction": summary["cam_inside_brain_fraction"],
        "outputs": sorted(p.name for p in out.iterdir()),
    }

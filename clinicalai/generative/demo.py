"""``run_demo``: the anomaly workflow on a brain-lesion phantom with every bundled generative model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..models import load_model
from ..outputs import write_json
from ..phantoms.brain import brain_case
from ..progress import ProgressCallback, report, scaled
from ..volume import write_volume
from .anomaly import anomaly, list_anomaly_models
from .sulci import remove_structure, sulcal_case


def run_demo(out_dir: Path, progress: Optional[ProgressCallback] = None, seed: int = 11) -> Dict[str, Any]:
    """Run each bundled anomaly model on a phantom and write the maps into ``out_dir``.

    Writes ``image.nii.gz``, ``lesion.nii.gz`` and per model ``<name>_map.nii.gz`` and
    ``<name>_reconstruction.nii.gz``; for the sulcal model a skeleton with a removed structure,
    its map and the removed voxels. Returns a JSON-able summary (score, lesion Dice / AUROC per
    model).
    """
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = list_anomaly_models()
    case = brain_case(seed, pathological=True)
    write_volume(case.image, out_dir / "image.nii.gz")
    write_volume(case.lesion, out_dir / "lesion.nii.gz")
    summary: Dict[str, Any] = {"case_seed": seed, "models": {}}
    for i, item in enumerate(models):
        sub = scaled(progress, i / max(len(models), 1), (i + 1) / max(len(models), 1))
        model = load_model(item["path"], device="auto")
        if item["input_kind"] == "labels":
            skeleton = sulcal_case(seed, size=int(model.card.input.size[0]))
            damaged, removed = remove_structure(skeleton.array, 100, np.random.default_rng(seed))
            image = skeleton.with_array(damaged)
            write_volume(image, out_dir / f"{item['name']}_skeleton_removed.nii.gz")
            write_volume(skeleton.with_array(removed.astype(np.uint8)), out_dir / f"{item['name']}_removed.nii.gz")
            result = anomaly(image, model, progress=sub, lesion=skeleton.with_array(removed.astype(np.uint8)))
        else:
            result = anomaly(case.image, model, progress=sub, lesion=case.lesion, mask=case.brain_mask)
        write_volume(result.map, out_dir / f"{item['name']}_map.nii.gz")
        write_volume(result.reconstruction, out_dir / f"{item['name']}_reconstruction.nii.gz")
        ls = result.lesion_scores or {}
        summary["models"][item["name"]] = {"kind": result.kind, "score": result.score,
                                           "dice": ls.get("dice"), "auroc": ls.get("auroc"),
                                           "seconds": round(result.timings["total_s"], 3)}
    write_json(summary, out_dir / "generative_summary.json")
    report(progress, 1.0, "generative demo done")
    return summary

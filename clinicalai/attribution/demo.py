"""``run_demo``: explain the bundled brain-lesion classifier on a phantom with every method,
score each map against the phantom's lesion, and run the randomisation sanity check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..models import bundled_model, load_model
from ..outputs import write_json
from ..progress import ProgressCallback, report
from ..volume import write_volume
from .commands import DEMO_MODEL
from .constrained import _references, phantom
from .core import attribute, randomization_check
from .metrics import HEADLINE_KEYS, score_map

#: methods shown by the demo (occlusion with 8-voxel patches keeps it quick)
DEMO_METHODS = ("gradient", "gradient-x-input", "integrated-gradients", "expected-gradients", "smoothgrad",
                "guided-backprop", "gradcam", "gradcam++", "occlusion")


def run_demo(out_dir: Path, progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Write ``image``, ``lesion`` and one map per method into ``out_dir``; return the scores."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(bundled_model(DEMO_MODEL), device="cpu")
    case = phantom(4242, pathological=True)
    write_volume(case.image, out_dir / "image.nii.gz")
    write_volume(case.lesion, out_dir / "lesion.nii.gz")
    summary: Dict[str, Any] = {"model": model.card.name, "methods": {}}
    options = {
        "integrated-gradients": {"n_steps": 16},
        "expected-gradients": {"n_samples": 8},
        "smoothgrad": {"nt_samples": 8},
        "occlusion": {"patch": 4, "stride": 2},
    }
    for i, method in enumerate(DEMO_METHODS):
        report(progress, i / (len(DEMO_METHODS) + 1), method)
        res = attribute(model, case.image, method, target="lesion",
                        references=_references() if method == "expected-gradients" else None,
                        **options.get(method, {}))
        write_volume(res.volume, out_dir / f"map_{method.replace('+', 'p')}.nii.gz")
        scores = score_map(res.volume, case.lesion, mask=case.brain_mask, threshold="percentile:98")
        summary["methods"][method] = {k: (round(v, 3) if isinstance(v, float) else v)
                                      for k, v in scores.items() if k in HEADLINE_KEYS}
        summary["methods"][method]["seconds"] = round(res.timings["total"], 2)
    report(progress, len(DEMO_METHODS) / (len(DEMO_METHODS) + 1), "randomisation check")
    check = randomization_check(model, case.image, "gradient", target="lesion", mask=case.brain_mask)
    summary["randomization_check"] = check.to_dict()
    write_json(summary, out_dir / "attribution.json")
    report(progress, 1.0, "done")
    return {"model": summary["model"],
            "dice": {m: s["dice"] for m, s in summary["methods"].items()},
            "randomization_check_passed": check.passed}

"""``clinicalai demo --out DIR``: every workflow on synthetic cases with the bundled demo models.

Each area provides ``clinicalai.<area>.demo.run_demo(out_dir, progress) -> dict``; this module
runs them in turn, each into its own sub-folder, and writes ``DIR/summary.json``. The demo
models are trained on synthetic phantoms: the outputs show that the software works end to
end, not what a network can do on patients.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .outputs import add_overwrite_arg, atomic_output, check_output_folder, write_json
from .progress import ConsoleProgress, ProgressCallback, report, scaled

#: (sub-folder, module with run_demo, what it shows)
DEMO_STEPS = (
    ("segcorrect", "clinicalai.segcorrect.demo", "cardiac MRI: U-Net segmentation + gated NVAE correction"),
    ("pet", "clinicalai.pet.demo", "FDOPA PET: fold-ensemble P(recurrence), Grad-CAM, SUV/TBR"),
    ("attribution", "clinicalai.attribution.demo", "brain MRI: attribution maps scored against the lesion"),
    ("generative", "clinicalai.generative.demo", "brain MRI: anomaly maps from models of healthy anatomy"),
)


def run_demo(out_dir: Path, progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Run every available demo step into ``out_dir``; returns the summary written to summary.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: Dict[str, Any] = {
        "note": "synthetic phantoms and demo models trained on phantoms; not for clinical use",
        "steps": {},
    }
    for i, (name, module_name, what) in enumerate(DEMO_STEPS):
        report(progress, i / len(DEMO_STEPS), f"{name}: {what}")
        module = importlib.import_module(module_name)  # by name: each demo imports torch, --help must not
        started = time.perf_counter()
        result = module.run_demo(out_dir / name, progress=scaled(progress, i / len(DEMO_STEPS), (i + 1) / len(DEMO_STEPS)))
        summary["steps"][name] = {"what": what, "seconds": round(time.perf_counter() - started, 2), "result": result}
    report(progress, 1.0, "done")
    write_json(summary, out_dir / "summary.json")
    return summary


def _run(args: argparse.Namespace) -> int:
    check_output_folder(args.out, args.overwrite)  # a user's folder is not written over
    # written beside the folder and moved in at the end: a failed run leaves nothing, and a rerun
    # with --overwrite replaces the demo's own files (a DICOM series folder included) and no other
    with atomic_output(args.out, directory=True, overwrite=args.overwrite) as tmp:
        summary = run_demo(tmp, progress=ConsoleProgress())
    for name, step in summary["steps"].items():
        print(f"{name:12s} {step['seconds']:7.1f} s  {step['what']}")
        print("             " + json.dumps(step["result"], default=str)[:300])
    print(f"outputs and summary.json in {args.out}")
    return 0


def register(commands) -> None:
    p = commands.top.add_parser("demo", help="run every workflow on synthetic cases with the bundled demo models")
    p.add_argument("--out", required=True, help="output folder (new, or empty)")
    add_overwrite_arg(p)
    p.set_defaults(func=_run)

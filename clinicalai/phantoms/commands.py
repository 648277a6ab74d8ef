"""``clinicalai synth {cardiac,pet,brain-lesion} --out DIR [--n N] [--seed S]``.

The whole data set is written into a temporary folder beside ``DIR`` and moved into place
only when every case is written, so a bad argument, an error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

from ..errors import ClinicalAIError, InputError, argument_errors_as_input_errors
from ..outputs import atomic_output
from ..progress import ConsoleProgress, report
from .common import BRAIN_LAYOUTS

#: kind -> (module, writer function, issue that brings it, what it writes)
GENERATORS: Dict[str, Tuple[str, str, int, str]] = {
    "cardiac": ("clinicalai.phantoms.cardiac", "write_cardiac_dataset", 3,
                "short-axis cardiac MRI in ACDC patient folders (Info.cfg, frames, RV/MYO/LV labels 1/2/3)"),
    "pet": ("clinicalai.phantoms.pet", "write_pet_dataset", 4,
            "18F-FDOPA brain PET in Bq/mL with brain masks and a CSV of scans and labels"),
    "brain-lesion": ("clinicalai.phantoms.brain", "write_brain_dataset", 2,
                     "brain MRI with lesion and brain masks, and a CSV of cases (healthy / pathological)"),
}
MAX_CASES = 10000


def register(commands) -> None:
    p = commands.top.add_parser(
        "synth",
        help="write a synthetic data set (cardiac, pet, brain-lesion) for tests and demos",
        description="Write deterministic synthetic phantoms: " + "; ".join(f"{k}: {v[3]}" for k, v in GENERATORS.items()),
    )
    p.add_argument("kind", choices=tuple(GENERATORS), help="which phantom")
    p.add_argument("--out", required=True, type=Path, help="output folder (new, or empty)")
    p.add_argument("--n", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same files (default 0)")
    p.add_argument("--layout", choices=BRAIN_LAYOUTS, default="flat",
                   help="brain-lesion only: 'flat' case folders or a BraTS-like layout (default flat)")
    p.set_defaults(func=cmd_synth)
    argument_errors_as_input_errors(p)


def _writer(kind: str) -> Callable[..., Any]:
    module_name, func_name, issue, _ = GENERATORS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ClinicalAIError(f"the {kind} phantom comes with issue #{issue}; it is not in this build yet") from None
        raise
    func = getattr(module, func_name, None)
    if func is None:
        raise ClinicalAIError(f"the {kind} phantom comes with issue #{issue}; it is not in this build yet")
    return func


def synth(kind: str, out: Path, n: int, seed: int, layout: str = "flat", progress=None) -> Path:
    """Write the data set ``kind`` into ``out`` atomically; returns ``out``.

    Raises:
        InputError: bad ``n`` / ``seed``, ``out`` is a file or a non-empty folder.
    """
    if kind not in GENERATORS:
        raise InputError(f"unknown phantom {kind!r}; choose one of {', '.join(GENERATORS)}")
    if not 1 <= n <= MAX_CASES:
        raise InputError(f"--n must be between 1 and {MAX_CASES}, got {n}")
    if seed < 0:
        raise InputError(f"--seed must be zero or positive, got {seed}")
    if layout != "flat" and kind != "brain-lesion":
        raise InputError("--layout applies to brain-lesion only")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder; choose a new output folder")
    writer = _writer(kind)
    kwargs: Dict[str, Any] = {}
    params = inspect.signature(writer).parameters
    if "progress" in params:
        kwargs["progress"] = progress
    if kind == "brain-lesion":
        kwargs["layout"] = layout
    report(progress, 0.0, f"writing {n} {kind} phantom(s)")
    with atomic_output(out, directory=True) as tmp:
        writer(tmp, n, seed, **kwargs)
    report(progress, 1.0, f"wrote {n} {kind} phantom(s)")
    return out


def cmd_synth(args: argparse.Namespace) -> int:
    out = synth(args.kind, args.out, args.n, args.seed, args.layout, progress=ConsoleProgress())
    files = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"wrote {args.n} {args.kind} case(s), {files} files, to {out}")
    return 0

"""``clinicalai models list | info M | architectures | import PATH`` and ``clinicalai export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ModelError, argument_errors_as_input_errors
from ..networks import architectures, build_network, count_parameters
from .export import example_input_shape, export_model
from .files import is_torchscript_archive, sha256_of
from .importing import import_model
from .package import load_model
from .registry import (BUNDLED_MODELS_DIR, IMPORT_RECORD, imported_folder, is_trusted, json_depth_guard, known_models,
                       read_model_card, resolve_model, trust_model, user_models_dir)

#: MONAI networks listed by ``models architectures`` beside ClinicalAI's own, with the
#: keyword arguments their parameter count is given for (common configurations).
COMMON_MONAI = (
    ("monai.networks.nets.UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 4,
                                  "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}),
    ("monai.networks.nets.UNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 4,
                                  "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}),
    ("monai.networks.nets.resnet10", {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 2}),
    ("monai.networks.nets.DenseNet121", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}),
    ("monai.networks.nets.BasicUNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}),
)


def register(commands) -> None:
    models = commands.top.add_parser("models", help="list the bundled and user models, show a card, import a model")
    sub = models.add_subparsers(dest="models_command", metavar="{list,info,architectures,import}")
    models.set_defaults(func=lambda a: _missing(models))

    p = sub.add_parser("list", help="the bundled demo models and the user's imported models (name, source, task, format)")
    p.add_argument("--dir", type=Path, default=None, help="list the models in this folder instead")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a model's card and check its sha256 (never runs the model's code)")
    p.add_argument("model", metavar="M", help="model file, card, bundle folder or model name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("architectures", help="allow-listed architectures with parameter counts")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_architectures)

    p = sub.add_parser(
        "import", help="copy a model (weights + card, or a MONAI bundle folder) into the user model folder",
        description="Copy a model into the user model folder ($CLINICALAI_MODELS, else ~/.clinicalai/models) so "
                    "that it is known by name to every --model and to the Slicer and browser choosers. Its sha256 "
                    "is checked now and on every load.")
    p.add_argument("path", metavar="PATH", help="weights file (.pt/.onnx with its .json card), card, or bundle folder")
    p.add_argument("--name", help="the model's name (default: the file stem or the bundle folder's name)")
    p.add_argument("--force", action="store_true", help="replace a user model of the same name")
    p.add_argument("--trust", action="store_true",
                   help="a TorchScript model is code: trust this exact file (by sha256) so it loads")
    p.set_defaults(func=cmd_import)

    ex = commands.top.add_parser("export", help="export a torch model to TorchScript or ONNX, with its card")
    ex.add_argument("model", metavar="MODEL", help="model file, card, bundle folder or model name")
    ex.add_argument("--to", required=True, choices=("torchscript", "onnx"), help="target format")
    ex.add_argument("-o", "--out", required=True, type=Path, help="output file (.pt/.ts for TorchScript, .onnx)")
    ex.add_argument("--input-size", type=int, nargs="+", metavar="N",
                    help="spatial size of the check input (default: the card's input.size, else 32 per axis)")
    ex.set_defaults(func=cmd_export)
    for parser in (models, ex, *sub.choices.values()):
        argument_errors_as_input_errors(parser)


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# ------------------------------------------------------------------------------------ list
def _card_row(name: str, card_path: Path, source: str) -> Dict[str, Any]:
    try:
        with json_depth_guard(card_path):
            card, _ = read_model_card(card_path)
    except ModelError as exc:
        return {"name": name, "source": source, "task": "?", "format": "?", "synthetic": None, "problem": str(exc),
                "path": str(card_path)}
    return {"name": name, "source": source, "task": card.task, "format": card.format,
            "synthetic": card.synthetic_demo, "version": card.version, "path": str(card_path)}


def bundled_cards(folder: Optional[Path] = None) -> List[Dict[str, Any]]:
    """One row per model: the cards in ``folder``, or by default every known model (bundled
    ones in ``Resources/Models``, then the user's imported ones), with ``source`` saying
    which; an invalid card gives a row with its problem instead of stopping the listing."""
    if folder is not None:
        return [_card_row(p.stem, p, "folder") for p in sorted(Path(folder).glob("*.json"))]
    return [_card_row(e.name, e.path, e.source) for e in known_models()]


def cmd_list(args: argparse.Namespace) -> int:
    if args.dir is not None and not args.dir.is_dir():
        raise ModelError(f"{args.dir}: no such folder")
    rows = bundled_cards(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        where = args.dir or f"{BUNDLED_MODELS_DIR} or {user_models_dir()}"
        print(f"no models in {where} (train the demo models with 'make models', or 'clinicalai models import PATH')")
        return 0
    _table(rows, ("name", "source", "task", "format", "synthetic"),
           lambda r, k: ("invalid card" if r.get("problem") and k == "task" else _cell(r.get(k))))
    return 0


def _cell(v: Any) -> str:
    if v is True:
        return "yes (synthetic demo)"
    if v is False:
        return "no"
    return "" if v is None else str(v)


def _table(rows: List[Dict[str, Any]], keys, fmt) -> None:
    cells = [[fmt(r, k) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.upper().ljust(w) for k, w in zip(keys, widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


# ------------------------------------------------------------------------------------ info
def model_info(spec: "str | Path") -> Dict[str, Any]:
    """The card of a model (file, card, bundle folder or name), its sha256 check and whether it
    holds code, read without loading the weights (an untrusted TorchScript file is never run):
    ``{"card": dict, "weights": path, "sha256": "ok" | "mismatch" | "not in card" | ...,
    "sha256_actual", "code": bool, "trusted": bool | None}``."""
    path = resolve_model(spec)
    card, weights = read_model_card(path)
    actual = sha256_of(weights) if weights.is_file() else None
    expected = card.sha256
    imported = imported_folder(path)
    if imported is not None and path.is_dir():
        try:
            expected = json.loads((imported / IMPORT_RECORD).read_text()).get("sha256")
        except (OSError, ValueError, AttributeError, RecursionError):
            expected = None
    if actual is None:
        check = "weights file missing"
    elif expected is None:
        check = "not in card (MONAI bundle)" if path.is_dir() else "not in card"
    else:
        check = "ok" if actual == expected else "mismatch"
    code = card.format == "torchscript" or (actual is not None and is_torchscript_archive(weights))
    return {"card": card.to_dict(), "weights": str(weights), "sha256_actual": actual, "sha256": check,
            "sha256_expected": expected, "code": code, "trusted": (is_trusted(actual) if code and actual else None)}


def _shown_card(card: dict) -> dict:
    """The card as ``models info`` prints it: a feature-space reference's arrays (a mean and a
    precision matrix, hundreds of numbers) summarised by their size."""
    ood = card.get("ood")
    if not isinstance(ood, dict) or not isinstance(ood.get("location"), list):
        return card
    n = len(ood["location"])
    summary = {k: v for k, v in ood.items() if k not in ("location", "precision")}
    summary["reference"] = f"mean and precision of {n} features (in the card file)"
    return {**card, "ood": summary}


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    print(json.dumps(_shown_card(info["card"]), indent=2))
    print(f"weights: {info['weights']}")
    print(f"sha256 check: {info['sha256']}")
    if info["code"]:
        print("code: TorchScript, runs when loaded; " + ("trusted (sha256 in the trust store)" if info["trusted"] else
              "NOT trusted: it loads only after 'clinicalai models import PATH --trust' or with --trust-code"))
    if info["sha256"] == "mismatch":
        raise ModelError(
            f"{Path(info['weights']).name} does not match its card (sha256 {info['sha256_actual'][:12]}... "
            f"!= {(info['sha256_expected'] or '')[:12]}...): the file was changed"
        )
    if info["sha256"] == "weights file missing":
        raise ModelError(f"the weights {Path(info['weights']).name} named by the card do not exist")
    return 0


# ------------------------------------------------------------------------------------ architectures
def architecture_rows(include_monai: bool = True) -> List[Dict[str, Any]]:
    """Each allow-listed ClinicalAI network (parameters for its ``reference_kwargs`` next to
    the study's ``reference_parameters``) and a few common MONAI configurations."""

    rows = []
    for name, arch in architectures().items():
        row: Dict[str, Any] = {"name": name, "summary": arch.summary, "kwargs": arch.reference_kwargs,
                               "parameters": None, "reference_parameters": arch.reference_parameters}
        try:
            row["parameters"] = count_parameters(build_network(name, arch.reference_kwargs or {}))
        except Exception as exc:  # noqa: BLE001 - a network needing arguments is listed, not fatal
            row["problem"] = " ".join(str(exc).split())[:120]
        rows.append(row)
    if include_monai:
        for name, kwargs in COMMON_MONAI:
            rows.append({"name": name, "summary": "MONAI", "kwargs": kwargs,
                         "parameters": count_parameters(build_network(name, kwargs)), "reference_parameters": None})
        # the MONAI networks of the PET recurrence study, in its configuration, beside its counts
        # lazy: pet_cnns imports torch, and every command's parser imports this module
        from ..networks.pet_cnns import MONAI_PET_ARCHITECTURES

        for short, (name, kwargs, reference) in MONAI_PET_ARCHITECTURES.items():
            rows.append({"name": name, "summary": f"MONAI, PET recurrence study ({short})", "kwargs": kwargs,
                         "parameters": count_parameters(build_network(name, kwargs)),
                         "reference_parameters": reference})
    return rows


def cmd_architectures(args: argparse.Namespace) -> int:
    rows = architecture_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    def fmt(r, k):
        if k == "parameters":
            return f"{r[k]:,}" if r.get(k) is not None else "needs arguments"
        if k == "reference":
            ref = r.get("reference_parameters")
            if ref is None:
                return "-"
            ratio = f" ({r['parameters'] / ref:.2f}x)" if r.get("parameters") else ""
            return f"{ref:,}{ratio}"
        if k == "config":
            kw = r.get("kwargs") or {}
            return ", ".join(f"{a}={b}" for a, b in kw.items() if a in ("spatial_dims", "in_channels", "out_channels",
                                                                      "n_input_channels", "num_classes", "channels"))
        return str(r.get(k) or "")

    _table([dict(r, reference=None, config=None) for r in rows], ("name", "parameters", "reference", "config"), fmt)
    print("(reference: parameter count reported by the source study, and the ratio to ours)")
    return 0


# ------------------------------------------------------------------------------------ export
def cmd_export(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, device="cpu")  # a TorchScript source needs trust (import --trust, --trust-code)
    if loaded.module is None:
        raise ModelError(f"{loaded.path.name} is already an ONNX model; export needs a torch model (.pt)")
    shape = None
    if args.input_size:
        dims = loaded.card.spatial_dims
        if len(args.input_size) != dims:
            raise ModelError(f"--input-size needs {dims} values for this {dims}D model, got {len(args.input_size)}")
        shape = (2, loaded.card.input.channels, *args.input_size)
    result = export_model(loaded, args.to, args.out, example_shape=shape or example_input_shape(loaded))
    print(f"wrote {result.path} and {result.card_path.name} ({result.format}; max abs difference to torch "
          f"{result.max_abs_diff:.2e} on an input of shape {list(result.example_shape)})")
    return 0


# ------------------------------------------------------------------------------------ import
def cmd_import(args: argparse.Namespace) -> int:
    result = import_model(args.path, name=args.name, force=args.force)
    verb = "replaced" if result.replaced else "imported"
    print(f"{verb} {result.name} ({result.format}, sha256 {result.sha256}) from {result.source} into {result.path}")
    if result.format == "torchscript":
        if args.trust:
            # shown before it is recorded: the user sees exactly which file they trust
            print(f"trusting code: name {result.name}, sha256 {result.sha256}, source {result.source}")
            trust_model(result.path, source=result.source)
            print("trusted: this exact file now loads by name; a changed file is untrusted again")
        else:
            print("note: this model is TorchScript, which is code; it will not load until you trust it "
                  f"('clinicalai models import {args.path} --name {result.name} --force --trust') "
                  "or pass --trust-code for one run")
    elif args.trust:
        print("note: a state dict / ONNX model holds no code; there is nothing to trust")
    return 0

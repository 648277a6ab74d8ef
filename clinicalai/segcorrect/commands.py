"""SegCorrect commands: ``segment``, ``correct``, ``train corrector`` (and ``train segmenter``),
``evaluate segcorrect``.

Every command checks its inputs and loads its models before computing, and writes its outputs
only after everything succeeded (atomically), so an error leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..batch.parallel import add_evaluate_cluster_args, case_mapper
from ..cli import add_input_choice, read_chosen_input
from ..errors import InputError
from ..models import BUNDLED_MODELS_DIR, check_model_output, load_model
from ..models.device import add_device_arg
from ..outputs import _json_default, atomic_output, write_json
from ..progress import ConsoleProgress, print_warnings
from ..volume import place_on_grid, read_volume, write_volume
from . import (DEFAULT_CONTEXT_CORRECTOR, DEFAULT_CORRECTOR, DEFAULT_SEGMENTER, FAMILIES, LATENT_STEPS, MIN_AGREEMENT,
               STRATEGIES, segmenter_cli)
from .labels import CARDIAC_NAMES, CARDIAC_VALUES

# The workflow modules (.pipeline, .corrector_training, .evaluate, ...) are imported inside the
# command functions: the CLI registers every command at startup, and those modules bring in
# scipy, MONAI and the networks, which only the command that runs needs.

#: "1 RV, 2 MYO, 3 LV": the labels a cardiac mask holds, for help texts
_LABELS_HELP = ", ".join(f"{v} {n}" for n, v in CARDIAC_VALUES.items())
_STRUCTURES = " / ".join(CARDIAC_NAMES)


def _load(path: Optional[str], default: str, device: str):
    """A model the user named (a path, or a bundled or user model's name), else the bundled ``default``."""
    return load_model(path or default, device=device)


def _card_beside(weights: Path) -> Path:
    """The JSON card beside a model file (where ``--write-card`` stores figures); a model without
    one (a MONAI bundle folder, a card-less file) is refused before any work."""
    card = Path(weights).with_suffix(".json")
    if not (Path(weights).is_file() and card.is_file()):
        raise InputError(f"--write-card needs a model file with its JSON card beside it; {weights} has none")
    return card


def _check_output(path: str, what: str = "output") -> Path:
    out = Path(path)
    name = out.name.lower()
    if not name.endswith((".nii", ".nii.gz", ".nrrd", ".dcm")):
        raise InputError(f"{out.name}: the {what} mask must be .nii, .nii.gz, .nrrd, .seg.nrrd or .dcm (DICOM SEG)")
    if out.exists() and out.is_dir():
        raise InputError(f"{out}: is a folder")
    return out


def _segments(volume) -> Any:
    return volume.metadata.get("segments")


def _dicom_series_for(outputs: Sequence[Optional[str]], image) -> Optional[List[str]]:
    """The image's DICOM files when an output is a DICOM SEG (``.dcm``), checked before any
    work: a SEG references the slices of the series it was drawn on."""
    if not any(o and str(o).lower().endswith(".dcm") for o in outputs):
        return None
    files = (image.metadata.get("dicom_files") if image is not None else None) or []
    if not files:
        raise InputError("a .dcm output is a DICOM SEG of the image's DICOM series; give the image as a DICOM "
                         "series (--image for correct), or write .seg.nrrd or .nii.gz")
    return list(files)


def _write_outputs(mask, out: Path, report: Optional[Dict[str, Any]], report_path: Optional[str],
                   raw=None, raw_path: Optional[str] = None, dicom_series: Optional[List[str]] = None) -> None:
    """Write the report and the mask(s) together: if one fails, none is left behind."""
    def write_masks() -> None:
        if raw is not None and raw_path:
            with atomic_output(raw_path) as tmp_raw:
                write_volume(raw, tmp_raw, segments=_segments(raw), dicom_series=dicom_series)
                write_volume(mask, out, segments=_segments(mask), dicom_series=dicom_series)
        else:
            write_volume(mask, out, segments=_segments(mask), dicom_series=dicom_series)

    if report_path:
        with atomic_output(report_path) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
            write_masks()
    else:
        write_masks()


def _gate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-gate", action="store_true",
                   help="apply the correction to every slice (the source study's method; not recommended)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="D",
                   help="use no correction whose mean Dice with the raw slice is below D "
                        f"(default {MIN_AGREEMENT}, chosen on validation phantoms)")
    p.add_argument("--raw-output", metavar="MASK", help="also write the uncorrected mask here")
    p.add_argument("--strategy", choices=STRATEGIES, default="gate",
                   help="how an invalid slice is corrected: 'gate' (default: only a small repair that agrees with "
                        "the raw slice) or 'evidence' (the valid candidate the segmenter's probabilities support "
                        "best; for 'correct', the one closest to the given mask)")
    p.add_argument("--context-corrector", metavar="C", default=None,
                   help="with --strategy evidence: a context corrector (previous/current/next slice, e.g. "
                        "cardiac-nvae-context) whose output competes as one more candidate source")


def _keep_largest_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-largest-component", dest="keep_largest", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="keep only the largest 3D connected component of each structure in the raw mask (MONAI "
                        "KeepLargestConnectedComponent; removes islands drawn away from the heart); default: as "
                        "the segmenter's card says (postprocessing.keep_largest_component)")


# ---------------------------------------------------------------------------- segment
def _run_segment(args: argparse.Namespace) -> int:
    from .pipeline import run_segcorrect

    out = _check_output(args.output)
    if args.raw_output:
        _check_output(args.raw_output, "raw")
    if args.confidence_threshold is not None and not 0 <= args.confidence_threshold <= 1:
        raise InputError("--confidence-threshold must be between 0 and 1")
    image = read_chosen_input(args.image, args)
    dicom_series = _dicom_series_for([args.output, args.raw_output], image)
    segmenter = _load(args.model, DEFAULT_SEGMENTER, args.device)
    corrector = None if args.no_correct else _load(args.corrector, DEFAULT_CORRECTOR, args.device)
    result = run_segcorrect(image, segmenter, corrector, gate=not args.no_gate,
                            confidence_threshold=args.confidence_threshold, min_agreement=args.min_agreement,
                            strategy=args.strategy, context_corrector=_context(args),
                            keep_largest=args.keep_largest, progress=ConsoleProgress())
    report = {"image": str(args.image), "segmenter": segmenter.card.name,
              "corrector": corrector.card.name if corrector else None, **result.to_dict()}
    _write_outputs(result.final, out, report, args.report, raw=result.raw, raw_path=args.raw_output,
                   dicom_series=dicom_series)
    print(_summary_line(out, result.correction))
    print_warnings(result.warnings)
    return 0


def _context(args: argparse.Namespace):
    """The ``--context-corrector`` model, or None; only the evidence strategy uses one."""
    if not args.context_corrector:
        return None
    if args.strategy != "evidence":
        raise InputError("--context-corrector needs --strategy evidence (it is a candidate source of that strategy)")
    return _load(args.context_corrector, DEFAULT_CORRECTOR, args.device)


def _summary_line(out: Path, correction) -> str:
    if correction is None:
        return f"wrote {out} (segmentation, no correction)"
    s = correction.summary()
    return (f"wrote {out}: {s['slices']} slices, {s['valid_raw']} valid before, {s['corrected']} corrected, "
            f"{s['valid_final']} valid after")


# ---------------------------------------------------------------------------- correct
def _run_correct(args: argparse.Namespace) -> int:
    from .pipeline import correct_mask

    out = _check_output(args.output)
    if args.raw_output:
        _check_output(args.raw_output, "raw")
    mask = read_volume(args.mask)
    if mask.array.size == 0 or not mask.array.any():
        raise InputError(f"{Path(args.mask).name}: the mask is empty (no labelled voxel); nothing to correct")
    image = read_volume(args.image) if args.image else None
    if image is not None and not image.same_grid(mask, atol=1e-4):
        # a DICOM SEG holds only its segmented slices, a mask may be cropped to its extent:
        # on the image's own voxels it is placed there exactly, anything else is refused
        mask = place_on_grid(mask, image.grid)
    dicom_series = _dicom_series_for([args.output, args.raw_output], image)
    corrector = _load(args.corrector, DEFAULT_CORRECTOR, args.device)
    result = correct_mask(mask, corrector, image=image, gate=not args.no_gate, min_agreement=args.min_agreement,
                          strategy=args.strategy, context_corrector=_context(args),
                          progress=ConsoleProgress())
    report = {"mask": str(args.mask), "image": args.image, **result.to_dict()}
    _write_outputs(result.final, out, report, args.report, raw=result.raw, raw_path=args.raw_output,
                   dicom_series=dicom_series)
    print(_summary_line(out, result))
    return 0


# ---------------------------------------------------------------------------- train corrector
TRAIN_DEMO_COMMAND = (
    "clinicalai train corrector --phantoms 40 --iterations 450 --kl-warmup 6420 --threads 1 --validate 8 "
    "-o Resources/Models/cardiac-nvae.pt"
)


def _run_train_corrector(args: argparse.Namespace) -> int:
    from .corrector_training import resolve_kl_warmup, train_corrector_command
    from .segmenter import check_segmentation_model

    out = check_model_output(args.output)
    if args.iterations < 1:
        raise InputError("--iterations must be at least 1")
    if args.phantoms is not None and args.phantoms < 1:
        raise InputError("--phantoms needs at least 1 case")
    if args.data is not None and not Path(args.data).is_dir():
        raise InputError(f"{args.data}: no such folder")
    if args.shifted and not args.segmenter:
        raise InputError("--shifted needs --segmenter (the segmenter whose failures are learnt from)")
    if min(args.shifted, args.early_stopping, args.patience) < 0 or args.validate_every < 1:
        raise InputError("--shifted, --early-stopping and --patience must be >= 0, --validate-every >= 1")
    if args.pair_share is not None and not 0.0 <= args.pair_share <= 1.0:
        raise InputError("--pair-share must be between 0 and 1")
    resolve_kl_warmup(args.kl_warmup, args.iterations)  # a bad value fails here, before any work
    command = args.command_line
    segmenter = None
    if args.segmenter:
        segmenter = _load(args.segmenter, DEFAULT_SEGMENTER, "cpu" if args.device == "cpu" else "auto")
        check_segmentation_model(segmenter, list(CARDIAC_NAMES))
    card = train_corrector_command(
        out, phantoms=args.phantoms, data=args.data, context=args.context, iterations=args.iterations,
        kl_warmup=args.kl_warmup, spectral_weight=args.spectral, seed=args.seed, threads=args.threads,
        validate=args.validate, name=args.name, command=command, batch_size=args.batch_size,
        device=args.device, segmenter=segmenter, progress=ConsoleProgress(), shifted=args.shifted,
        early_stopping=args.early_stopping, patience=args.patience, validate_every=args.validate_every,
        **({} if args.pair_share is None else {"pair_share": args.pair_share}),
    )
    v = card.get("validation", {})
    line = f"wrote {out} ({args.iterations} iterations in {card['training'].get('seconds', 0):.0f} s)"
    if v:
        line += (f"; held-out corrupted phantoms: gated mean Dice {v['dice_before']:.3f} -> {v['dice_after_gated']:.3f}, "
                 f"validity {v['validity_before']:.2f} -> {v['validity_after_gated']:.2f}")
    print(line)
    return 0


# ---------------------------------------------------------------------------- evaluate
EVALUATE_COMMAND = (
    "clinicalai evaluate segcorrect --phantoms 20 --seed 3000 --json segcorrect-eval.json --markdown segcorrect-eval.md"
)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .corruptions import corruption_kinds
    from .evaluate import evaluate_correctors, markdown_table

    if args.phantoms < 1:
        raise InputError("--phantoms must be at least 1")
    if args.latent_steps < 0:
        raise InputError("--latent-steps must be 0 or more")
    corruptions = corruption_kinds(args.corruptions)
    models = [_load(args.corrector, DEFAULT_CORRECTOR, args.device)]
    # with the evidence strategy a context corrector is a candidate source of the corrector's run
    # (as on segment / correct / evaluate segmenter), not a corrector of its own
    source = _load(args.context_corrector, "", args.device) if args.context_corrector and args.strategy == "evidence" \
        else None
    if args.context_corrector and source is None:
        models.append(_load(args.context_corrector, "", args.device))
    elif not args.no_context and source is None:
        if (BUNDLED_MODELS_DIR / f"{DEFAULT_CONTEXT_CORRECTOR}.pt").is_file():
            models.append(_load(None, DEFAULT_CONTEXT_CORRECTOR, args.device))
    correctors = {}
    for m in models:
        name = m.card.name if m.card.name not in correctors else f"{m.card.name} ({m.path.name})"
        correctors[name] = m
    report = evaluate_correctors(correctors, n_cases=args.phantoms, seed=args.seed,
                                 min_agreement=args.min_agreement, strategy=args.strategy, map_cases=case_mapper(args),
                                 context_corrector=source, latent_steps=args.latent_steps, corruptions=corruptions)
    report["command"] = args.command_line
    md = markdown_table(report)
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        with atomic_output(args.markdown) as tmp:
            tmp.write_text(md + "\n")
    print(md)
    return 0


def _run_evaluate_segmenter(args: argparse.Namespace) -> int:
    from ..models.card import store_heldout
    from .evaluate_segmenter import card_entry, evaluate_segmenter, markdown_rows

    if args.phantoms < 1:
        raise InputError("--phantoms must be at least 1")
    if args.write_card and args.family != "heldout":
        raise InputError("--write-card stores held-out figures: it needs --family heldout")
    segmenter = _load(args.model, DEFAULT_SEGMENTER, args.device)
    card_path = _card_beside(segmenter.path) if args.write_card else None  # checked before any work
    corrector = None if args.no_correct else _load(args.corrector, DEFAULT_CORRECTOR, args.device)
    report = evaluate_segmenter(segmenter, corrector, family=args.family, n_cases=args.phantoms, seed=args.seed,
                                max_rotation_deg=args.max_rotation, strategy=args.strategy, progress=ConsoleProgress(),
                                map_cases=case_mapper(args), context_corrector=_context(args),
                                keep_largest=args.keep_largest)
    report["command"] = args.command_line
    if args.json:
        write_json(report, args.json)
    if card_path is not None:
        store_heldout(card_path, card_entry(report))
        print(f"held-out figures written to {card_path}")
    print(f"{args.family} family, {args.phantoms} synthetic phantoms from seed {args.seed}"
          + (f", strategy {args.strategy}" if corrector is not None else "")
          + (", largest component per structure" if report["keep_largest_component"] else ""))
    print(markdown_rows(report))
    return 0


# ---------------------------------------------------------------------------- registration
def register(commands) -> None:
    """Add ``segment``, ``correct``, ``train corrector`` / ``segmenter``, ``evaluate segcorrect``
    / ``segmenter``."""
    _add_segment(commands.top)
    _add_correct(commands.top)
    _add_train_corrector(commands.train)
    _add_evaluate_segcorrect(commands.evaluate)
    _add_evaluate_segmenter(commands.evaluate)
    segmenter_cli.register_train_segmenter(commands)


def _add_segment(top) -> None:
    p = top.add_parser(
        "segment", help=f"segment a short-axis cardiac MRI ({_STRUCTURES}) and correct the mask (gated NVAE)",
        description="Segment IMAGE with a 2D segmenter and correct each slice with an NVAE where the raw "
        "slice is anatomically invalid and the correction is valid. Writes the final mask on the input grid.")
    p.add_argument("image", metavar="IMAGE", help="NIfTI, NRRD or DICOM folder (short-axis stack)")
    add_input_choice(p)
    p.add_argument("-o", "--output", required=True, metavar="MASK", help="mask to write (.nii.gz, .nrrd, .seg.nrrd; .dcm: a DICOM SEG of a DICOM series input)")
    p.add_argument("--model", metavar="M", help="segmenter: file, bundle folder or model name (default: bundled cardiac-unet)")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--corrector", metavar="C", help="mask corrector: file, bundle folder or model name (default: bundled cardiac-nvae)")
    grp.add_argument("--no-correct", action="store_true", help="segmentation only")
    add_device_arg(p)
    p.add_argument("--report", metavar="R.json", help="write a JSON report (per-slice decisions, timings)")
    p.add_argument("--confidence-threshold", type=float, default=None, metavar="T",
                   help="never change a slice whose segmenter confidence is at least T (0..1)")
    _keep_largest_arg(p)
    _gate_args(p)
    p.set_defaults(func=_run_segment)


def _add_correct(top) -> None:
    p = top.add_parser(
        "correct", help="correct a cardiac mask made by any tool (gated NVAE)",
        description=f"Correct MASK (labels {_LABELS_HELP}) slice by slice; a slice is changed only "
        "where it is anatomically invalid and the correction is valid.")
    p.add_argument("mask", metavar="MASK", help="label mask (NIfTI, NRRD, .seg.nrrd, DICOM SEG)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="corrected mask to write (.nii.gz, .nrrd, .seg.nrrd; .dcm: a DICOM SEG of the --image DICOM series)")
    p.add_argument("--image", metavar="IMAGE", help="the image the mask was drawn on (a mask on part of its voxels, e.g. a DICOM SEG of "
                   "the segmented slices, is placed on its grid; with --strategy evidence, "
                   "evidence for the candidates of invalid slices)")
    p.add_argument("--corrector", metavar="C", help="mask corrector: file, bundle folder or model name (default: bundled cardiac-nvae)")
    add_device_arg(p)
    p.add_argument("--report", metavar="R.json", help="write a JSON report (per-slice decisions, timings)")
    _gate_args(p)
    p.set_defaults(func=_run_correct)


def _add_train_corrector(train) -> None:
    p = train.add_parser(
        "corrector", help="train an NVAE mask corrector on plausible masks + synthetic corruptions",
        description="Train the NVAE corrector (Adamax 1e-2, cosine to 1e-4, batch 8, KL warm-up, per-scale "
        "beta). Demo model: " + TRAIN_DEMO_COMMAND)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--phantoms", type=int, metavar="N", help="train on the masks of N cardiac phantoms")
    src.add_argument("--data", metavar="DIR", help="ACDC folder (ground-truth masks are the plausible masks)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt")
    p.add_argument("--context", action="store_true", help="3-slice context (12 input channels, beta 1,1,5)")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--kl-warmup", default="auto", metavar="N|auto",
                   help="KL warm-up iterations, or 'auto' (default): 30 %% of --iterations (NVAE's kl_anneal_portion); "
                        "the source study used 6420 for tens of thousands of iterations")
    p.add_argument("--spectral", type=float, default=0.0, metavar="W", help="spectral regularisation weight (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_device_arg(p, "cpu", "training device")
    p.add_argument("--validate", type=int, default=12, metavar="N",
                   help="held-out phantoms for the card's validation figures (0: none)")
    p.add_argument("--name", default=None, help="name in the card (default: the file stem)")
    p.add_argument("--segmenter", metavar="M", default=None,
                   help="also learn from this segmenter's outputs on the training images (30 %% of samples; "
                        f"a model file or a model name such as {DEFAULT_SEGMENTER})")
    p.add_argument("--shifted", type=int, default=0, metavar="N",
                   help="with --segmenter: also its outputs on N strongly augmented copies of the training phantoms "
                        "(contrast, bias, noise, blur, rotation, no body: where it fails); copies whose output has "
                        "mean Dice < 0.5 are left out")
    p.add_argument("--pair-share", type=float, default=None, metavar="F",
                   help="share of samples drawn from the segmenter's (output, truth) pairs (default 0.3)")
    p.add_argument("--early-stopping", type=int, default=0, metavar="N",
                   help="N validation phantoms (seeds 1100..) pick the best checkpoint after the KL warm-up (0: last)")
    p.add_argument("--patience", type=int, default=0, metavar="P",
                   help="with --early-stopping: stop after P validations without a better score (0: run to the end)")
    p.add_argument("--validate-every", type=int, default=50, metavar="K", help="iterations between validations")
    p.set_defaults(func=_run_train_corrector)


def _add_evaluate_segcorrect(evaluate) -> None:
    p = evaluate.add_parser(
        "segcorrect", help="Dice / HD95 / ASSD / validity before and after correction on corrupted phantoms",
        description="Evaluate correctors on held-out synthetic corrupted phantom masks. Example: " + EVALUATE_COMMAND)
    p.add_argument("--corrector", metavar="C", help="corrector: file, bundle folder or model name (default: bundled cardiac-nvae)")
    p.add_argument("--context-corrector", metavar="C",
                   help="with --strategy evidence: this context corrector's output (e.g. cardiac-nvae-context) is one "
                        "more candidate source of the corrector's run, as on 'segment'; otherwise: also evaluate it "
                        "as a corrector of its own (default: bundled cardiac-nvae-context, if installed)")
    p.add_argument("--no-context", action="store_true", help="do not evaluate a context corrector")
    p.add_argument("--latent-steps", type=int, default=LATENT_STEPS, metavar="N",
                   help=f"with --strategy evidence: Adam steps of the latent-code optimisation per invalid slice "
                        f"(default {LATENT_STEPS}; 0: off)")
    p.add_argument("--phantoms", type=int, default=20, help="held-out phantoms (default 20)")
    p.add_argument("--corruptions", default="default", metavar="SET|KIND,...",
                   help="corruption kinds drawn: 'default' (the seven of every earlier figure), 'all' (plus "
                        "speckle_dropout, far_blobs, cavity_patch) or a comma-separated list of kinds")
    p.add_argument("--seed", type=int, default=3000,
                   help="first phantom seed (training uses 0..N-1, the card's validation 1000..)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, help=f"gate threshold (default {MIN_AGREEMENT})")
    p.add_argument("--strategy", choices=STRATEGIES, default="gate",
                   help="correction strategy of the 'gated' rows (default gate; see 'segment --help')")
    add_device_arg(p)
    p.add_argument("--json", metavar="R.json", help="write the full report")
    p.add_argument("--markdown", metavar="T.md", help="write the table as Markdown")
    add_evaluate_cluster_args(p, "phantoms")
    p.set_defaults(func=_run_evaluate)


def _add_evaluate_segmenter(evaluate) -> None:
    p = evaluate.add_parser(
        "segmenter", help="the segmenter (and the correction) on images of a phantom family: Dice, validity",
        description="Segment phantoms of the training family or of the held-out family (never trained on; "
                    "clinicalai.phantoms.cardiac_heldout) and score raw and corrected masks against the truth.")
    p.add_argument("--family", choices=FAMILIES, default="heldout")
    p.add_argument("--phantoms", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="first seed of the family (default 0)")
    p.add_argument("--max-rotation", type=float, default=180.0, metavar="DEG",
                   help="held-out family: the RV lies within DEG of the image left (default 180: anywhere)")
    p.add_argument("--model", metavar="M", help=f"segmenter (default: bundled {DEFAULT_SEGMENTER})")
    p.add_argument("--corrector", metavar="C", help=f"corrector (default: bundled {DEFAULT_CORRECTOR})")
    p.add_argument("--no-correct", action="store_true", help="score the segmenter alone")
    p.add_argument("--strategy", choices=STRATEGIES, default="gate", help="correction strategy (default gate)")
    p.add_argument("--context-corrector", metavar="C", default=None,
                   help="with --strategy evidence: the context corrector's output as one more candidate source")
    _keep_largest_arg(p)
    add_device_arg(p)
    p.add_argument("--json", metavar="R.json", help="write the full report")
    p.add_argument("--write-card", action="store_true",
                   help="store the figures in the segmenter's card ('heldout'; --family heldout, a model file "
                        "with its card beside it; the weights are not touched)")
    add_evaluate_cluster_args(p, "phantoms")
    p.set_defaults(func=_run_evaluate_segmenter)

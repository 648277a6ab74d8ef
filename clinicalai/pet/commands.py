"""``clinicalai pet``, ``clinicalai train pet`` and ``clinicalai evaluate pet``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from ..batch.parallel import add_evaluate_cluster_args, case_mapper
from ..casemap import CaseMapper, serial_map
from ..cli import add_common_model_args
from ..errors import InputError
from ..models.device import add_device_arg
from ..outputs import add_overwrite_arg, atomic_output, check_output_folder, write_json
from ..progress import ConsoleProgress, print_warnings, report
from .calibration import calibration_report  # numpy only: keeps --help fast
from .suv import UNITS

# The workflows are imported inside the handlers: the command line imports every
# area's commands module to build ``clinicalai --help``, which stays fast that way.


def register(commands) -> None:
    p = commands.top.add_parser("pet", help="FDOPA PET: P(recurrence) from a fold ensemble, Grad-CAM, SUVmax/TBR")
    p.add_argument("image", help="PET: DICOM series folder (Bq/mL with tags), NIfTI with a BIDS *_pet.json sidecar, "
                                     "or NIfTI / NRRD (give --units)")
    p.add_argument("--units", choices=UNITS, help="units of a NIfTI / NRRD PET (DICOM carries its own)")
    p.add_argument("--static-window", type=float, nargs=2, metavar=("START", "END"),
                   help="a dynamic PET (4D BIDS-PET NIfTI, or a dynamic DICOM series): average its whole frames from "
                        "START to END minutes after the injection into the static scan the models take (the window "
                        "of your protocol's static scan)")
    add_common_model_args(p, multiple=True)
    p.add_argument("--cam", metavar="CAM", help="write the fold-averaged Grad-CAM on the PET grid here (.nii.gz, .nrrd)")
    p.add_argument("--brain-mask", metavar="B", help="brain mask (any grid; default: computed from the PET)")
    p.add_argument("--lesion", metavar="L", help="lesion VOI for SUVmax / TBR (default: 1.6 x background threshold)")
    p.add_argument("--voi-out", metavar="V", help="write the lesion VOI used for TBR here (.seg.nrrd, .nii.gz)")
    p.add_argument("--json", metavar="R", help="write the result as JSON here")
    _add_bqml_args(p)
    p.set_defaults(func=_run_pet)

    t = commands.train.add_parser("pet", help="k-fold training of a PET recurrence CNN from a CSV")
    t.add_argument("--csv", required=True, help="CSV: path, label, [scanner, brain_mask, split, units, weight_kg, dose_bq, ...]")
    t.add_argument("--arch", default="cnn3d", help="cnn3d, vgg11, squeezenet, resnet10, senet (default cnn3d)")
    t.add_argument("--arch-kwargs", default="{}", metavar="JSON", help='extra network kwargs, e.g. \'{"channels": [8,16,16,16]}\'')
    t.add_argument("--folds", type=int, default=10)
    t.add_argument("--epochs", type=int, default=150)
    t.add_argument("--batch-size", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--weight-decay", type=float, default=1e-3)
    t.add_argument("--loss", choices=("bce", "sce"), default="bce")
    t.add_argument("--sce-alpha", type=float, default=0.1)
    t.add_argument("--sce-beta", type=float, default=1.0)
    t.add_argument("--patience", type=int, default=15)
    t.add_argument("--factor", type=float, default=0.5)
    t.add_argument("--no-augment", action="store_true", help="switch off the augmentation")
    t.add_argument("--augmentation", choices=("nnunet", "strong", "mild"), default="nnunet",
                   help="nnunet: the study's (default); strong / mild: clinicalai.augment presets")
    t.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"), help="network voxel size mm (default 2 2 2)")
    t.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="network input voxels (default 128 128 82)")
    t.add_argument("--reduced", action="store_true", help="64x64x41 voxels of 4 mm (CPU demos)")
    t.add_argument("--units", choices=UNITS, help="units of NIfTI rows without a units column")
    t.add_argument("--seed", type=int, default=0)
    add_device_arg(t)
    t.add_argument("--name", help="model name stem (default pet-<arch>)")
    t.add_argument("--synthetic-demo", action="store_true", help="mark the cards as synthetic demo models")
    t.add_argument("--out", required=True, help="output folder (fold models, predictions, metrics.json; new, or empty)")
    add_overwrite_arg(t)
    t.set_defaults(func=_run_train)

    e = commands.evaluate.add_parser("pet", help="evaluate PET fold models on a labelled CSV (bootstrap 95%% CIs)")
    e.add_argument("--csv", required=True)
    add_common_model_args(e, multiple=True)
    e.add_argument("--split", default="test", choices=("test", "train", "all"), help="rows to evaluate (default test; all when the CSV has no split)")
    e.add_argument("--units", choices=UNITS)
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--out", metavar="DIR", help="write predictions.csv and metrics.json here (a new, or empty, folder)")
    add_overwrite_arg(e)
    e.add_argument("--json", metavar="R", help="write the metrics as JSON here")
    add_evaluate_cluster_args(e, "rows")
    e.set_defaults(func=_run_evaluate)


def _add_bqml_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Bq/mL PET: what SUV needs when the file does not say it (DICOM tags or a BIDS *_pet.json "
                             "sidecar beside a NIfTI are read by themselves; these fill in or override them)")
    g.add_argument("--weight", "--weight-kg", dest="weight", type=float, metavar="KG", help="body weight (kg)")
    g.add_argument("--dose", "--injected-mbq", dest="dose", type=float, metavar="MBQ", help="injected dose (MBq)")
    g.add_argument("--injection-time", metavar="ISO", help="injection date-time, e.g. 2024-03-01T09:30:00")
    g.add_argument("--scan-time", metavar="ISO", help="scan start date-time")
    g.add_argument("--decay-correction", default="START", choices=("START", "ADMIN", "NONE"),
                   help="time the values are decay-corrected to (default START, the scan start)")


def _tags_from_args(args, pet) -> Optional[dict]:
    """The PET tags to use instead of the image's: the options over the file's tags (DICOM or a
    BIDS sidecar) when both are given, the options alone for a Bq/mL image without tags;
    ``None``: the image's own."""
    from .suv import UserDecayData, pet_tags_from_options

    user = UserDecayData.parse(args.weight, args.dose, args.injection_time, args.scan_time)
    if pet.metadata.get("pet"):
        return None if user.empty else user.apply_to(pet.metadata["pet"])
    if (args.units or "").lower() == "bqml":
        return pet_tags_from_options(args.weight, args.dose, args.injection_time, args.scan_time, args.decay_correction)
    return None


def _check_outputs(*paths: Optional[str]) -> None:
    for p in paths:
        if p and not Path(p).parent.exists() and str(Path(p).parent) not in ("", "."):
            raise InputError(f"cannot write {p}: folder {Path(p).parent} does not exist")


def _run_pet(args) -> int:
    from ..volume import read_volume, write_volume
    from .dynamic import read_pet_image
    from .workflow import load_pet_models, predict_pet

    _check_outputs(args.cam, args.json, args.voi_out)
    pet = read_pet_image(args.image, args.static_window)
    if "static_from_frames" in pet.metadata:
        print(pet.metadata["warnings"][-1])  # which frames were averaged, before the result
    tags = _tags_from_args(args, pet)
    mask = read_volume(args.brain_mask) if args.brain_mask else None
    lesion = read_volume(args.lesion) if args.lesion else None
    models = load_pet_models(args.model, device=args.device)
    result = predict_pet(pet, models, units=args.units, brain_mask=mask, lesion=lesion, cam=bool(args.cam),
                         progress=ConsoleProgress(), tags=tags)
    # everything computed: now write (each file atomically)
    if args.cam:
        write_volume(result.cam, args.cam)
    if args.voi_out:
        if result.lesion_mask is None:
            raise InputError("no lesion VOI to write: nothing above 1.6 x background and no --lesion given")
        write_volume(result.lesion_mask, args.voi_out)
    if args.json:
        write_json({**result.to_dict(), **({"static_from_frames": pet.metadata["static_from_frames"]}
                                           if "static_from_frames" in pet.metadata else {})}, args.json)
    s = result.static.to_dict()
    tbr = "n/a" if s["TBRmax"] is None else f"{s['TBRmax']:.2f}"
    print(f"P(recurrence) = {result.probability:.3f} -> {result.label} "
          f"(folds {', '.join(f'{p:.2f}' for p in result.fold_probabilities)}; spread {result.spread:.2f})")
    if result.uncertain:
        print("UNCERTAIN: " + "; ".join(result.uncertain_reasons))
    print(f"SUVmax {s['SUVmax']:.2f}, TBRmax {tbr}, lesion VOI: {s['lesion_voi']}"
          + (f"; Grad-CAM inside brain {100 * result.cam_inside_brain_fraction:.0f}%" if result.cam_inside_brain_fraction is not None else ""))
    print_warnings(result.warnings)
    return 0


def _run_train(args) -> int:
    from .preprocess import FULL_SIZE_XYZ, FULL_SPACING_MM, REDUCED_SIZE_XYZ, REDUCED_SPACING_MM
    from .train import TrainConfig, read_pet_csv, train_folds

    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--arch-kwargs is not valid JSON: {exc}") from None
    if not isinstance(arch_kwargs, dict):
        raise InputError("--arch-kwargs must be a JSON object")
    if args.epochs < 1 or args.batch_size < 1:
        raise InputError("--epochs and --batch-size must be at least 1")
    spacing = tuple(args.spacing) if args.spacing else (REDUCED_SPACING_MM if args.reduced else FULL_SPACING_MM)
    size = tuple(args.size) if args.size else (REDUCED_SIZE_XYZ if args.reduced else FULL_SIZE_XYZ)
    # recorded in the cards; quoted so that it can be pasted back into a shell
    command = args.command_line
    cfg = TrainConfig(
        arch=args.arch, arch_kwargs=arch_kwargs, folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, loss=args.loss, sce_alpha=args.sce_alpha, sce_beta=args.sce_beta,
        patience=args.patience, factor=args.factor, augment=not args.no_augment, augmentation=args.augmentation, spacing_mm=spacing, size_xyz=size,
        seed=args.seed, device=args.device, name=args.name, synthetic_demo=args.synthetic_demo, command=command,
    )
    from ..networks.pet_cnns import pet_architecture

    pet_architecture(args.arch)  # unknown architecture: error before reading any image
    check_output_folder(args.out, args.overwrite)  # before training, not after it
    rows = read_pet_csv(args.csv, units=args.units)
    result = train_folds(args.csv, args.out, cfg, progress=ConsoleProgress(), rows=rows, overwrite=args.overwrite)
    m = result.metrics
    print(f"out-of-fold AUC {m['auc']['value']} (95% CI {m['auc']['ci95'][0]}-{m['auc']['ci95'][1]}), "
          f"balanced accuracy {m['balanced_accuracy']['value']}")
    if result.test_metrics:
        print(f"test (mean of {cfg.folds} fold models) AUC {result.test_metrics['auc']['value']}")
    if result.flagged:
        print("likely mislabelled (training loss stays high): " + ", ".join(f["id"] for f in result.flagged))
    print(f"models and metrics in {args.out}")
    return 0


def evaluate_csv(csv_path, model_paths: Optional[List[str]] = None, split: str = "test", units: Optional[str] = None,
                 device: str = "auto", n_boot: int = 1000, progress=None, map_cases: CaseMapper = serial_map):
    """Predict every selected row of a PET CSV with the fold ensemble; ``(rows, probabilities, metrics)``.
    ``map_cases`` runs the rows (default: one after the other here; ``clinicalai.batch`` gives
    one for Dask workers, same results)."""
    from .train import bootstrap_metrics, read_pet_csv
    from .workflow import load_pet_models

    rows = read_pet_csv(csv_path, units=units)
    if split != "all" and any(r.split == "test" for r in rows):
        rows = [r for r in rows if r.split == split]
    if not rows:
        raise InputError(f"no rows with split '{split}' in {Path(csv_path).name}")
    models = load_pet_models(model_paths, device=device)
    probs = map_cases(_predict_row, rows, (models,), lambda i: report(progress, i / len(rows), f"case {i}/{len(rows)}"))
    metrics = bootstrap_metrics([r.label for r in rows], probs, n_boot=n_boot)
    return rows, probs, metrics


def _predict_row(r, models) -> float:
    """P(recurrence) of one row of :func:`evaluate_csv`."""
    from ..volume import read_volume
    from .dynamic import read_pet_image
    from .workflow import predict_pet

    pet = read_pet_image(r.path, r.static_window)
    mask = read_volume(r.brain_mask) if r.brain_mask else None
    return predict_pet(pet, models, units=None if pet.metadata.get("pet") else r.units, brain_mask=mask, tags=r.tags).probability


def _run_evaluate(args) -> int:
    _check_outputs(args.json)
    if args.out:
        check_output_folder(args.out, args.overwrite)
    rows, probs, metrics = evaluate_csv(args.csv, args.model, args.split, args.units, args.device, args.bootstrap,
                                        progress=ConsoleProgress(), map_cases=case_mapper(args))
    # calibration next to discrimination: does P(recurrence) read as a frequency on these rows
    summary = {"csv": str(args.csv), "split": args.split, "metrics": metrics,
               "calibration": calibration_report([r.label for r in rows], probs)}
    if args.out:
        with atomic_output(args.out, directory=True, overwrite=args.overwrite) as tmp:
            with open(tmp / "predictions.csv", "w") as f:
                f.write("id,label,scanner,probability\n")
                for r, p in zip(rows, probs):
                    f.write(f"{r.id},{r.label},{r.scanner},{p:.5f}\n")
            (tmp / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        write_json(summary, args.json)
    auc = metrics["auc"]
    print(f"{len(rows)} cases: AUC {auc['value']} (95% CI {auc['ci95'][0]}-{auc['ci95'][1]}), "
          f"accuracy {metrics['accuracy']['value']}, sensitivity {metrics['sensitivity']['value']}, "
          f"specificity {metrics['specificity']['value']}; Brier {summary['calibration']['brier']}, "
          f"ECE {summary['calibration']['ece']}")
    return 0

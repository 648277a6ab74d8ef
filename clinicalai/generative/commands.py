"""Command line of the generative models (DESIGN.md, "Command line").

- ``clinicalai train generative {wgan-gp,ae,vae,f-anogan,cyclegan} --phantoms N [--family mix --mni M]|--data DIR -o MODEL.pt``
- ``clinicalai anomaly IMAGE --model M -o MAP [--lesion L] [--json R.json]``
- ``clinicalai evaluate generative --model M -o DIR`` (AUROC per synthetic-anomaly size, latent analyses)
- ``clinicalai train translation --phantoms N -o MODEL.pt`` and ``clinicalai translate SKELETON --model M -o TISSUES``
  (the cortical-folding study's V-Net: sulcal skeleton -> grey / white matter)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..cli import add_common_model_args, add_input_choice, add_threads_arg, apply_threads, read_chosen_input
from ..errors import InputError
from ..models.device import add_device_arg
from ..outputs import add_overwrite_arg, atomic_output, check_output_folder, write_json
from ..progress import ConsoleProgress
from .nets import KINDS, POLARITIES

# The workflows are imported inside the handlers: the command line imports every
# area's commands module to build ``clinicalai --help``, which stays fast that way.


def _ints(text: str):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def register(commands) -> None:
    """``train generative``, ``anomaly``, ``evaluate generative``, ``train translation``, ``translate``."""
    _register_train(commands)
    _register_anomaly(commands)
    _register_evaluate(commands)
    _register_translation(commands)


def _register_train(commands) -> None:
    t = commands.train.add_parser(
        "generative", help="train a generative anomaly model (wgan-gp, ae, vae, f-anogan, cyclegan)",
        description="Train a generative model of healthy anatomy; its residuals are anomaly maps.")
    t.add_argument("kind", choices=KINDS)
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--phantoms", type=int, metavar="N", help="train on N synthetic phantoms")
    src.add_argument("--data", type=Path, metavar="DIR", help="folder of healthy NIfTI/NRRD volumes")
    t.add_argument("--pathological-data", type=Path, metavar="DIR", help="CycleGAN: folder of volumes with lesions")
    t.add_argument("--input", choices=("brain", "sulci"), default="brain",
                   help="phantom kind: brain MR (intensity) or sulcal skeletons (labels 0/11/60)")
    t.add_argument("--family", choices=("phantom", "mix", "template"), default="phantom",
                   help="brain phantoms: the brain-lesion phantoms alone, mixed with FLAIR-like MNI-template "
                        "phantoms of that family's training stream (mix), or --phantoms N template phantoms "
                        "alone (template; the only family with --contrast T1) (default phantom)")
    t.add_argument("--contrast", choices=("FLAIR", "T1"), default="FLAIR",
                   help="contrast of the template phantoms of --family template (default FLAIR)")
    t.add_argument("--map-polarity", choices=POLARITIES, default=None,
                   help="the card's default anomaly map: both, brighter or darker than the healthy reconstruction "
                        "(e.g. darker for a T1 model: its lesions are hypointense; default: not set, i.e. both)")
    t.add_argument("--mni", type=int, default=24, metavar="N",
                   help="healthy MNI-template phantoms of --family mix (a CycleGAN also gets N lesioned; default 24)")
    add_threads_arg(t)
    t.add_argument("--epochs", type=int, default=800)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--latent-size", type=int, default=1728)
    t.add_argument("--channels", type=_ints, default=(16, 32, 64), help="channels per level, e.g. 8,16,32")
    t.add_argument("--strides", type=_ints, default=None, help="strides per level (default 2 each)")
    t.add_argument("--adversarial", choices=("wgan-gp", "wgan-clip", "gan"), default="wgan-gp")
    t.add_argument("--n-critic", type=int, default=5)
    t.add_argument("--gp-lambda", type=float, default=10.0)
    t.add_argument("--recon-loss", choices=("auto", "ce", "l2"), default="auto")
    t.add_argument("--recon-weight", type=float, default=10.0)
    t.add_argument("--adversarial-weight", type=float, default=1.0)
    t.add_argument("--kappa", type=float, default=1.0, help="f-AnoGAN weight of the critic-feature residual")
    t.add_argument("--beta", type=float, default=1e-3, help="VAE weight of the KL term")
    t.add_argument("--perceptual-weight", type=float, default=0.0, help="CycleGAN perceptual term (0: off)")
    t.add_argument("--size", type=int, default=32, help="model grid edge in voxels (sulci: the crop edge)")
    t.add_argument("--spacing", type=float, default=None, help="model grid spacing in mm (default 3 brain, 2 sulci)")
    t.add_argument("--field-of-view", choices=("centre", "whole"), default="centre",
                   help="brain intensity models: one crop of --size at the volume centre (maps 0 outside it), or "
                        "the whole head: trained on random windows of --size, read through overlapping windows")
    t.add_argument("--max-seconds", type=float, default=None, help="stop training after this time")
    t.add_argument("--validate", type=int, default=16, metavar="N", help="held-out phantoms for the card (0: none)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", help="model name in the card (default: file stem)")
    t.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.pt")
    t.set_defaults(func=_train)


def _register_anomaly(commands) -> None:
    a = commands.top.add_parser("anomaly", help="anomaly map of a volume under a generative model of healthy anatomy")
    a.add_argument("image", type=Path)
    add_input_choice(a)
    add_common_model_args(a)
    a.add_argument("-o", "--output", type=Path, required=True, metavar="MAP", help="anomaly map (NIfTI/NRRD)")
    a.add_argument("--lesion", type=Path, help="lesion mask to score the map against")
    a.add_argument("--brain-mask", type=Path, help="region for the lesion scores")
    a.add_argument("--threshold", help="Dice threshold: a number, percentile:P or otsu")
    a.add_argument("--polarity", choices=POLARITIES, default=None,
                   help="what the map shows: both = |image - healthy reconstruction|; brighter / darker = only "
                        "voxels brighter / darker than the reconstruction (FLAIR hyperintensities, T1 hypointense "
                        "lesions); default: the card's map_polarity, else both")
    a.add_argument("--reconstruction", type=Path, help="also write the healthy reconstruction")
    a.add_argument("--json", type=Path, metavar="R.json", help="write score, timings and lesion scores")
    a.set_defaults(func=_anomaly)


def _register_evaluate(commands) -> None:
    e = commands.evaluate.add_parser(
        "generative", help="AUROC per synthetic-anomaly size and latent-space analyses of a generative model")
    add_common_model_args(e)
    e.add_argument("--phantoms", type=int, default=16, metavar="N", help="held-out healthy phantoms")
    e.add_argument("--sizes", type=_ints, default=None, help="anomaly sizes in voxels (default 200,500,800)")
    e.add_argument("--anomalies", default=None, help="comma list: remove (label models), hot, cold")
    e.add_argument("--no-latent", action="store_true", help="skip the latent-space analyses")
    e.add_argument("--seed", type=int, default=4242)
    e.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="report folder (new, or empty)")
    add_overwrite_arg(e)
    e.set_defaults(func=_evaluate)


def _register_translation(commands) -> None:
    tt = commands.train.add_parser(
        "translation", help="train the V-Net sulcal skeleton -> grey / white matter translation on phantoms",
        description="Train MONAI's V-Net to translate sulcal skeletons (0 / 11 / 60) into grey / white "
                    "matter (0 / 100 / 200), as in the cortical-folding study, on synthetic sulcal phantoms.")
    tt.add_argument("--phantoms", type=int, default=24, metavar="N", help="training phantoms (default 24)")
    tt.add_argument("--iterations", type=int, default=300, help="optimiser steps (default 300)")
    tt.add_argument("--batch-size", type=int, default=2)
    tt.add_argument("--lr", type=float, default=1e-3)
    tt.add_argument("--size", type=int, default=32, help="crop edge in voxels, a multiple of 16 (the study: 96)")
    tt.add_argument("--validate", type=int, default=4, metavar="N", help="held-out phantoms for the card (0: none)")
    tt.add_argument("--max-seconds", type=float, default=None, help="stop training after this time")
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--name", help="model name in the card (default: file stem)")
    tt.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.pt")
    tt.set_defaults(func=_train_translation)

    tr = commands.top.add_parser("translate", help="grey / white matter from a sulcal skeleton (V-Net translation model)")
    tr.add_argument("skeleton", type=Path, help="label volume: 0 inside the brain, 11 outside, 60 sulcus")
    tr.add_argument("--model", required=True, metavar="M",
                    help="a model of 'clinicalai train translation' (file, or its name once imported)")
    add_device_arg(tr)
    tr.add_argument("-o", "--output", type=Path, required=True, metavar="TISSUES",
                    help="label volume 0 / 100 / 200 on the skeleton's grid (NIfTI, NRRD or .seg.nrrd)")
    tr.set_defaults(func=_translate)


def _progress():
    return ConsoleProgress()


def _train(args) -> int:
    from .data import GridSpec
    from .package import Source, sulcal_spec, train_package
    from .train import TrainConfig

    strides = args.strides or tuple(2 for _ in args.channels)
    if len(strides) != len(args.channels):
        raise InputError("--strides needs one value per --channels level")
    config = TrainConfig(
        kind=args.kind, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_size=args.latent_size,
        channels=tuple(args.channels), strides=tuple(strides), adversarial=args.adversarial, n_critic=args.n_critic,
        gp_lambda=args.gp_lambda, recon_loss=args.recon_loss, recon_weight=args.recon_weight,
        adversarial_weight=args.adversarial_weight, kappa=args.kappa, beta=args.beta,
        perceptual_weight=args.perceptual_weight, seed=args.seed, max_seconds=args.max_seconds)
    source = Source(phantoms=args.phantoms, data=args.data, pathological_data=args.pathological_data,
                    input=args.input, seed=args.seed, family=args.family,
                    mni=args.mni if args.family == "mix" else 0, contrast=args.contrast)
    apply_threads(args.threads)
    factor = int(np.prod(strides))
    if args.size % factor or args.size < factor:
        raise InputError(f"--size {args.size} must be a multiple of the product of the strides ({factor})")
    if args.input == "sulci" and args.field_of_view != "centre":
        raise InputError("--field-of-view whole is for brain intensity models; sulcal models see one crop")
    if args.input == "sulci":
        spec = sulcal_spec(args.size)
        if args.spacing:
            spec = GridSpec((args.spacing,) * 3, spec.size, spec.input_kind, spec.label_values)
    else:
        spec = GridSpec((args.spacing or 3.0,) * 3, (args.size,) * 3, field_of_view=args.field_of_view)
    command = args.command_line
    card = train_package(config, source, args.output, spec=spec, name=args.name, command=command,
                         validate=args.validate, progress=_progress(), map_polarity=args.map_polarity)
    v = card.get("validation") or {}
    summary = {k: v[k] for k in ("volume_auroc", "map_dice", "map_auroc") if k in v}
    print(f"saved {args.output} ({card['generative_kind']}, {card['training']['epochs_run']} epochs)"
          + (f"; held-out {summary}" if summary else ""))
    return 0


def _anomaly(args) -> int:
    from ..volume import read_volume, write_volume
    from .anomaly import anomaly

    image = read_chosen_input(args.image, args)
    lesion = read_volume(args.lesion) if args.lesion else None
    mask = read_volume(args.brain_mask) if args.brain_mask else None
    from .anomaly import resolve_anomaly_model

    model = resolve_anomaly_model(args.model, args.device)
    threshold = args.threshold
    if threshold is not None:
        try:
            threshold = float(threshold)
        except ValueError:
            pass
    result = anomaly(image, model, progress=_progress(), lesion=lesion, mask=mask, threshold=threshold,
                     polarity=args.polarity)
    write_volume(result.map, args.output)
    if args.reconstruction:
        write_volume(result.reconstruction, args.reconstruction)
    if args.json:
        write_json(result.to_dict(), args.json)
    line = f"{result.model} ({result.kind}): {result.score_name} = {result.score:.4g}"
    if result.lesion_scores:
        ls = result.lesion_scores
        line += f"; lesion Dice {ls['dice']:.3f}, AUROC {ls['auroc'] if ls['auroc'] is None else round(ls['auroc'], 3)}"
    print(line)
    return 0


def _evaluate(args) -> int:
    from .anomaly import resolve_anomaly_model
    from .evaluation_run import evaluate_model

    check_output_folder(args.output, args.overwrite)  # before the minutes of work, not after
    model = resolve_anomaly_model(args.model, args.device)
    anomalies = [a.strip() for a in args.anomalies.split(",")] if args.anomalies else None
    with atomic_output(args.output, directory=True, overwrite=args.overwrite) as tmp:
        report = evaluate_model(model, tmp, n=args.phantoms, sizes=args.sizes, anomalies=anomalies,
                                latent=not args.no_latent, seed=args.seed, progress=_progress())
        write_json(report, tmp / "report.json")
    for row in report["synthetic_anomalies"]:
        print(f"{row['anomaly']:>7} {row['size']:>5} voxels: AUROC {row['auroc']:.3f}")
    if "latent" in report:
        lat = report["latent"]
        extra = f", thickness ratio {lat['thickness_ratio']:.2f}" if lat.get("thickness_ratio") else ""
        print(f"latent: {lat['dead_dimensions']}/{lat['latent_size']} dead dimensions{extra}")
    print(f"wrote {args.output}")
    return 0


def _train_translation(args) -> int:
    from .translation import train_translator

    result = train_translator(args.phantoms, args.output, iterations=args.iterations, size=args.size, lr=args.lr,
                              batch_size=args.batch_size, validate=args.validate, seed=args.seed,
                              max_seconds=args.max_seconds, progress=_progress(), command=args.command_line,
                              name=args.name)
    dice = ", ".join(f"{k} {v:.3f}" for k, v in result.validation_dice.items())
    print(f"saved {result.path} ({result.iterations} iterations)" + (f"; held-out Dice: {dice}" if dice else ""))
    return 0


def _translate(args) -> int:
    from ..models import load_model
    from ..volume import read_volume, write_volume
    from .translation import TISSUE_LABELS, translate

    skeleton = read_volume(args.skeleton)
    model = load_model(args.model, device=args.device)
    tissues = translate(model, skeleton, progress=_progress())
    write_volume(tissues, args.output, segments=TISSUE_LABELS)
    counts = {lab["name"]: int((tissues.array == lab["value"]).sum()) for lab in TISSUE_LABELS}
    print(f"wrote {args.output}: " + ", ".join(f"{k} {v} voxels" for k, v in counts.items()))
    return 0

"""Command line of the attribution engine (DESIGN.md, "Command line").

- ``clinicalai explain IMAGE --model M --method NAME [--target K] -o MAP [--lesion L] [--json R.json]``
- ``clinicalai train classifier [--constraint {none,gradient,expected-gradients}] -o MODEL.pt``
- ``clinicalai evaluate attribution --model A --model B`` (lesion Dice of the thresholded maps)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..batch.parallel import add_evaluate_cluster_args, case_mapper
from ..cli import add_common_model_args, add_input_choice, add_threads_arg, apply_threads, read_chosen_input
from ..errors import InputError, argument_errors_as_input_errors
from ..outputs import write_json
from ..progress import ConsoleProgress, print_warnings

# The workflows are imported inside the handlers: the command line imports every
# area's commands module to build ``clinicalai --help``, which stays fast that way.

DEMO_MODEL = "brain-lesion-classifier"


def register(commands) -> None:
    from .methods import METHODS

    p = commands.top.add_parser(
        "explain", help="attribution map of a classifier on an image (gradient, IG, Grad-CAM, occlusion, ...)",
        description="Explain a classifier's decision on an image; the map is written on the image's grid.")
    p.add_argument("image", metavar="IMAGE", help="image (NIfTI, NRRD or DICOM folder)")
    add_input_choice(p)
    add_common_model_args(p)
    p.add_argument("--method", required=True, choices=list(METHODS), help="attribution method")
    p.add_argument("--target", default=None, help="class index or name to explain (default: the predicted class)")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="MAP", help="output map (.nii.gz, .nrrd)")
    p.add_argument("--lesion", type=Path, metavar="L", help="manual lesion mask: print the map's scores against it")
    p.add_argument("--brain-mask", type=Path, metavar="B", help="restrict the scores to this mask")
    p.add_argument("--json", type=Path, metavar="R.json", help="write the map's record (and scores) as JSON")
    p.add_argument("--layer", help="gradcam / gradcam++ layer (default: the card's cam_layer, else the last conv block)")
    p.add_argument("--normalization", default="max-abs", help="none, max-abs or percentile[:P] (default max-abs)")
    p.add_argument("--threshold", default="percentile:95", help="map threshold for the Dice: a number or percentile:P")
    p.add_argument("--reference", type=Path, action="append", metavar="R",
                   help="reference (healthy) volume for expected-gradients / IG baseline 'reference' (repeat)")
    p.add_argument("--baseline", default=None,
                   help="integrated-gradients baseline: zero, blur (the image blurred, see --blur-sigma), mean (the "
                        "foreground's mean intensity), mirror (the image mirrored left-right about the head's centre: "
                        "the other hemisphere) or reference (--reference); default: the model card's "
                        "attribution.baseline, else zero. Occlusion: what fills the patch (zero, blur or mean; "
                        "default zero, whatever the card says)")
    p.add_argument("--blur-sigma", type=float, default=None, metavar="MM",
                   help="Gaussian sigma of the blur baseline in mm (default: the card's attribution.blur_sigma_mm, else 8)")
    p.add_argument("--steps", type=int, default=None, help="integrated-gradients steps / EG or SmoothGrad samples")
    p.add_argument("--patch", type=int, default=None, help="occlusion patch edge in voxels")
    p.add_argument("--stride", type=int, default=None, help="occlusion stride in voxels")
    p.set_defaults(func=cmd_explain)

    t = commands.train.add_parser(
        "classifier", help="train the (attribution-constrained) healthy-vs-lesion classifier on brain phantoms",
        description="Cross-entropy + alpha x log-barrier(t) on 'attributions of healthy slices are 0'.")
    t.add_argument("-o", "--out", required=True, type=Path, help="output model (.pt; the card goes beside it)")
    t.add_argument("--constraint", choices=("none", "gradient", "expected-gradients"), default="gradient")
    t.add_argument("--alpha", type=float, default=5.0, help="weight alpha_A of the barrier (default 5)")
    t.add_argument("--t", type=float, default=20.0, help="log-barrier t")
    t.add_argument("--input", dest="input_mode", choices=("intensity", "tpm"), default="intensity",
                   help="input: intensities or tissue probability maps")
    t.add_argument("--phantoms", type=int, default=24, help="number of training phantoms (half with lesions)")
    t.add_argument("--family", choices=("phantom", "mix"), default="phantom",
                   help="training data: the brain-lesion phantoms, or mixed with MNI-template phantoms of both "
                        "contrasts from that family's training stream (default phantom)")
    t.add_argument("--mni", type=int, default=24, metavar="N",
                   help="MNI-template phantoms of --family mix (half with lesions; default 24)")
    t.add_argument("--t1-share", type=float, default=0.5, metavar="F",
                   help="share of --family mix's template phantoms that are T1-like, the rest FLAIR-like (default 0.5)")
    t.add_argument("--healthy-twins", action="store_true",
                   help="--family mix: add the healthy twin of each lesioned template phantom (same anatomy, bias "
                        "and noise, no lesion) at its lesion slices, so lesion and healthy slices differ only "
                        "where the lesion is")
    t.add_argument("--grid-mm", type=float, default=4.0, metavar="MM",
                   help="in-plane voxel (mm) of the training phantoms and of the card's input.spacing_mm, to which "
                        "every explained image is resampled (default 4)")
    t.add_argument("--widths", type=int, nargs=4, default=None, metavar="W",
                   help="channels of the ResNet's four blocks (default 8 16 32 32)")
    # checked by the trainer against constrained.CAM_LAYERS (one list; that module is heavy to import here)
    t.add_argument("--cam-layer", default="layer4", metavar="layer1..layer4",
                   help="the card's Grad-CAM layer (default layer4; each earlier block has twice its resolution)")
    t.add_argument("--augmentation", choices=("none", "mild", "strong"), default="none",
                   help="MONAI augmentation preset of clinicalai.augment on every training slice (default none)")
    add_threads_arg(t)
    t.add_argument("--ig-baseline", default=None, metavar="NAME",
                   help="integrated-gradients baseline the card sets as the model's default (attribution.baseline): "
                        "zero, blur or mean (default: none set, so zero)")
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--validate", type=int, default=6, metavar="N",
                   help="pathological validation / test phantoms for the card's figures (0: none)")
    t.set_defaults(func=cmd_train)

    e = commands.evaluate.add_parser(
        "attribution", help="lesion segmentation by thresholded attribution maps, per model (Dice, AUROC, ...)",
        description="Threshold chosen on validation phantoms (precision/recall operating point), scored on test phantoms.")
    e.add_argument("--model", action="append", metavar="M",
                   help="classifier: file, bundle folder or model name (repeat; default: the bundled demo)")
    e.add_argument("--method", default=None, help="attribution method for every model (default: the model's constraint)")
    e.add_argument("--n-val", type=int, default=6)
    e.add_argument("--n-test", type=int, default=10)
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--json", type=Path, metavar="R.json", help="write every number as JSON")
    add_evaluate_cluster_args(e, "models")
    e.set_defaults(func=cmd_evaluate)
    for parser in (p, t, e):
        argument_errors_as_input_errors(parser)


def _model_path(arg):
    """The model the user named (path or model name; ``load_model`` resolves it), else the demo."""
    return arg or DEMO_MODEL


def cmd_explain(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..volume import read_volume, write_volume
    from .core import attribute
    from .methods import baseline_name
    from .metrics import SCORE_KEYS, score_map

    if args.baseline not in (None, "reference"):
        baseline_name(args.baseline)  # a bad name fails before any file is read
    elif args.baseline == "reference" and args.method == "occlusion":
        raise InputError("occlusion's baseline must be zero, blur or mean (reference is for integrated-gradients)")
    if args.blur_sigma is not None and not args.blur_sigma > 0:
        raise InputError(f"--blur-sigma must be a positive number of mm, got {args.blur_sigma}")
    # a sigma that no blur baseline takes would change nothing, silently (integrated gradients
    # without --baseline uses the card's: the engine checks that one)
    blur_possible = (args.baseline == "blur" and args.method in ("integrated-gradients", "occlusion")
                     or args.baseline is None and args.method == "integrated-gradients")
    if args.blur_sigma is not None and not blur_possible:
        raise InputError("--blur-sigma is the width of the blur baseline: it needs --baseline blur "
                         "(integrated-gradients or occlusion)")
    image = read_chosen_input(args.image, args)
    lesion = read_volume(args.lesion) if args.lesion else None
    brain = read_volume(args.brain_mask) if args.brain_mask else None
    for what, v in (("lesion mask", lesion), ("brain mask", brain)):
        if v is not None and not v.same_grid(image, atol=1e-4):
            raise InputError(f"the {what} is not on the image's grid (shape/spacing/origin/direction differ)")
    refs = [read_volume(r) for r in args.reference] if args.reference else None
    model = load_model(_model_path(args.model), device=args.device)
    options = {}
    if args.method in ("integrated-gradients", "occlusion"):  # occlusion: the patch's content (no card default)
        if args.baseline is not None:
            options["baseline"] = args.baseline
        if args.blur_sigma is not None:
            options["sigma_mm"] = args.blur_sigma
    if args.method == "integrated-gradients" and args.steps:
        options["n_steps"] = args.steps
    elif args.method == "expected-gradients" and args.steps:
        options["n_samples"] = args.steps
    elif args.method == "smoothgrad" and args.steps:
        options["nt_samples"] = args.steps
    elif args.method == "occlusion":
        if args.patch:
            options["patch"] = args.patch
        if args.stride:
            options["stride"] = args.stride
    target = args.target
    if target is not None and target.lstrip("-").isdigit():
        target = int(target)
    result = attribute(model, image, args.method, target, layer=args.layer, normalization=args.normalization,
                       references=refs, progress=ConsoleProgress(), **options)
    record = {"image": str(args.image), "model": model.card.name, **result.to_dict()}
    if lesion is not None:
        threshold = float(args.threshold) if _is_number(args.threshold) else args.threshold
        scores = score_map(result.volume, lesion, mask=brain, threshold=threshold)
        record["scores"] = scores
    write_volume(result.volume, args.out)
    if args.json:
        write_json(record, args.json)
    probs = ", ".join(f"{c} {p:.3f}" for c, p in zip(result.prediction["classes"], result.prediction["probabilities"]))
    what = "highest P over slices" if result.prediction.get("per_slice_max") else "P"
    print(f"{result.method} map of class '{result.target_name}' -> {args.out}   ({what}: {probs})")
    if lesion is not None:
        s = record["scores"]
        print("  ".join(f"{k} {_fmt(s[k])}" for k in SCORE_KEYS))
    print_warnings(result.warnings)
    return 0


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def cmd_train(args: argparse.Namespace) -> int:
    from ..models import save_model
    from .constrained import GRID_MM, WIDTHS, evaluate_models, train_classifier

    from .methods import BLUR_SIGMA_MM, baseline_name

    if args.out.suffix != ".pt":
        raise InputError("the classifier is saved as a .pt state dict; give an output path ending in .pt")
    ig_baseline = baseline_name(args.ig_baseline) if args.ig_baseline else None  # checked before training
    apply_threads(args.threads)
    augmentation = None if args.augmentation == "none" else args.augmentation
    result = train_classifier(constraint=args.constraint, alpha=args.alpha, t=args.t, input_mode=args.input_mode,
                              n_cases=args.phantoms, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, augmentation=augmentation, family=args.family,
                              n_mni=args.mni if args.family == "mix" else 0, grid_mm=args.grid_mm, t1_share=args.t1_share,
                              twins=args.healthy_twins, widths=args.widths or WIDTHS, cam_layer=args.cam_layer, progress=ConsoleProgress())
    card = result.card
    card["name"] = args.out.stem
    options = [("constraint", args.constraint), ("alpha", args.alpha), ("t", args.t), ("input", args.input_mode),
               ("phantoms", args.phantoms), ("epochs", args.epochs), ("seed", args.seed)]
    if args.family == "mix":
        options += [("family", "mix"), ("mni", args.mni)]
        if args.t1_share != 0.5:
            options.append(("t1-share", f"{args.t1_share:g}"))
        if args.healthy_twins:
            options.append(("healthy-twins", None))
    if augmentation is not None:
        options.append(("augmentation", augmentation))
    if args.grid_mm != GRID_MM:
        options.append(("grid-mm", f"{args.grid_mm:g}"))
    if args.widths:
        options.append(("widths", " ".join(str(w) for w in args.widths)))
    if args.cam_layer != "layer4":
        options.append(("cam-layer", args.cam_layer))
    if ig_baseline is not None:
        options.append(("ig-baseline", ig_baseline))
        card["attribution"] = {"baseline": ig_baseline, **({"blur_sigma_mm": BLUR_SIGMA_MM} if ig_baseline == "blur" else {})}
    card["training"]["command"] = "clinicalai train classifier " + " ".join(
        f"--{k}" if v is None else f"--{k} {v}" for k, v in options) + f" -o {args.out.name}"
    if args.validate > 0:
        res = evaluate_models({"this": (result.module, card)}, n_val=args.validate, n_test=args.validate)["this"]
        card["validation"] = {
            "data": f"{args.validate} validation + {args.validate} test pathological phantoms, "
                    f"{args.validate} healthy (seeds from 1000)",
            "map_method": res["method"], "threshold": res["threshold"], "slice_auc": res["slice_auc"],
            **{k: v for k, v in res["summary"].items()},
        }
    save_model(result.module, card, args.out)
    print(f"trained in {result.seconds:.0f} s -> {args.out}")
    if card.get("validation"):
        v = card["validation"]
        print(f"slice AUC {v['slice_auc']:.3f}; lesion Dice of the {v['map_method']} maps "
              f"{v['dice']['mean']:.3f} +/- {v['dice']['std']:.3f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..models import load_model
    from .constrained import evaluate_models, format_table

    specs = args.model or [_model_path(None)]
    models = {}
    for spec in specs:
        m = load_model(spec, device="cpu")
        stem = Path(spec).stem
        models[stem if stem not in models else str(spec)] = m
    methods = {name: args.method for name in models} if args.method else None
    results = evaluate_models(models, n_val=args.n_val, n_test=args.n_test, seed=args.seed, methods=methods,
                              progress=ConsoleProgress(), map_cases=case_mapper(args))
    print(format_table(results))
    if args.json:
        write_json(results, args.json)
    return 0

"""V-Net image-to-image translation of the cortical-folding study: sulcal skeleton -> grey / white matter.

The study translates a skeletonised sulcal volume into a grey / white matter segmentation
(labels 0, 100, 200) with a V-Net, so that what a generative model of sulci produces can be
looked at as anatomy. Here the network is MONAI's :class:`~monai.networks.nets.VNet`, trained
on the sulcal phantoms of :mod:`clinicalai.generative.sulci`, whose target is the brain
phantom's own tissues on the same crop (:func:`~clinicalai.generative.sulci.sulcal_translation_pair`).

The model is a ``segmentation`` card with two input channels, so the cardiac / CT segment
commands refuse it (they read one intensity channel); ``clinicalai translate`` runs it. It
shares the generative models' grid handling (:func:`~clinicalai.generative.data.to_model_grid`):
a skeleton on any grid is reoriented, resampled (nearest) and cropped or padded to the model
grid, and the translation is put back on the input grid exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, ModelError
from ..models import check_model_output, read_card, save_model
from ..networks import build_network
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..volume import Volume
from .data import SULCAL_LABELS, GridSpec, decode_labels, to_model_grid
from .package import sulcal_spec
from .sulci import TISSUE_VALUES, sulcal_translation_pair

ARCHITECTURE = "monai.networks.nets.VNet"
#: MONAI VNet keyword arguments of the translator: two input channels (outside, sulcus; "inside"
#: is what is neither, and VNet's first layer needs a channel count dividing 16), three tissues
VNET_KWARGS: Dict[str, Any] = {"spatial_dims": 3, "in_channels": 2, "out_channels": len(TISSUE_VALUES),
                               "dropout_prob_down": 0.0, "dropout_prob_up": [0.0, 0.0]}
TISSUE_LABELS = [{"name": "grey matter", "value": TISSUE_VALUES[1], "color": [0.55, 0.55, 0.55]},
                 {"name": "white matter", "value": TISSUE_VALUES[2], "color": [0.95, 0.95, 0.9]}]
#: VNet halves the grid four times: each edge of the model grid is a multiple of this
GRID_MULTIPLE = 16


def translation_spec(size: int = 32) -> GridSpec:
    """The model grid: the sulcal models' grid (:func:`~clinicalai.generative.package.sulcal_spec`),
    ``size``^3, checked to suit the V-Net."""
    if size < GRID_MULTIPLE or size % GRID_MULTIPLE:
        raise InputError(f"--size must be a multiple of {GRID_MULTIPLE} (V-Net halves the grid four times), got {size}")
    return sulcal_spec(size)


def network_input(one_hot_zyx: np.ndarray) -> np.ndarray:
    """``(3, z, y, x)`` one-hot of (inside, outside, sulcus) -> the ``(2, z, y, x)`` V-Net input."""
    return np.ascontiguousarray(one_hot_zyx[1:], dtype=np.float32)


def build_translator():
    return build_network(ARCHITECTURE, VNET_KWARGS)


def tissue_dice(predicted: np.ndarray, target: np.ndarray) -> Dict[str, float]:
    """Dice of grey and white matter between two tissue label arrays (values 0 / 100 / 200)."""
    out = {}
    for label in TISSUE_LABELS:
        p, t = np.asarray(predicted) == label["value"], np.asarray(target) == label["value"]
        denominator = p.sum() + t.sum()
        out[label["name"]] = float(2.0 * (p & t).sum() / denominator) if denominator else 1.0
    return out


@dataclass
class TranslationResult:
    """Training outcome: the card written beside the weights and the held-out Dice per tissue."""

    path: Path
    card: Dict[str, Any]
    validation_dice: Dict[str, float]
    iterations: int


def train_translator(n_phantoms: int, out: "str | Path", *, iterations: int = 300, size: int = 32, lr: float = 1e-3,
                     batch_size: int = 2, validate: int = 4, seed: int = 0, max_seconds: Optional[float] = None,
                     progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                     command: str = "", name: Optional[str] = None) -> TranslationResult:
    """Train the V-Net on ``n_phantoms`` sulcal phantoms (seeds ``seed ..``) and save it to ``out``.

    ``validate`` more phantoms (seeds after the training ones) give the card's Dice per tissue.
    Loss: MONAI DiceCELoss (softmax); Adam. Nothing is written when training fails or is cancelled.
    """
    import torch

    out = check_model_output(out)
    if n_phantoms < 1 or iterations < 1 or batch_size < 1 or validate < 0:
        raise InputError("need at least 1 phantom, 1 iteration and a batch of 1 (validate >= 0)")
    spec = translation_spec(size)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    report(progress, 0.0, f"making {n_phantoms + validate} sulcal phantoms")
    x_train, y_train = translation_pairs(range(seed, seed + n_phantoms), size, spec, cancel)
    net = build_translator()
    started = time.monotonic()
    done = _fit(net, x_train, y_train, iterations, batch_size, lr, rng, started, max_seconds, progress, cancel)
    dice: Dict[str, float] = {}
    if validate:
        report(progress, 0.92, f"validating on {validate} held-out phantoms")
        x_val, y_val = translation_pairs(range(seed + n_phantoms, seed + n_phantoms + validate), size, spec, cancel)
        dice = _validation_dice(net, x_val, y_val)
    card = _translator_card(name or out.stem, spec, n_phantoms, seed, done, batch_size, lr,
                            time.monotonic() - started, command, validate, dice)
    check_cancel(cancel)
    save_model(net, card, out)
    report(progress, 1.0, f"saved {out}")
    return TranslationResult(out, read_card(out.with_suffix(".json")).to_dict(), dice, done)


def translation_pairs(seeds: Sequence[int], size: int, spec: GridSpec,
                      cancel: Optional[CancelToken] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Network inputs ``(N, 2, z, y, x)`` float32 and tissue indices ``(N, z, y, x)`` int64
    (0 / 1 / 2 for the values of ``TISSUE_VALUES``) of the sulcal phantoms ``seeds``."""
    xs, ys = [], []
    for s in seeds:
        check_cancel(cancel)
        skeleton, tissues = sulcal_translation_pair(int(s), size)
        xs.append(network_input(to_model_grid(skeleton, spec).tensor))
        ys.append(np.searchsorted(TISSUE_VALUES, np.asarray(tissues.array)).astype(np.int64))
    return np.stack(xs), np.stack(ys)


def _fit(net, x_train: np.ndarray, y_train: np.ndarray, iterations: int, batch_size: int, lr: float,
         rng: np.random.Generator, started: float, max_seconds: Optional[float],
         progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> int:
    """Adam on MONAI's DiceCELoss (softmax) with random mirroring; stops after ``iterations``
    or ``max_seconds`` from ``started`` (``time.monotonic``). The iterations done; ``net`` ends in eval mode."""
    import torch
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(softmax=True, to_onehot_y=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    done = 0
    net.train()
    for it in range(iterations):
        check_cancel(cancel)
        pick = rng.choice(len(x_train), size=min(batch_size, len(x_train)), replace=False)
        x = torch.from_numpy(x_train[pick])
        y = torch.from_numpy(y_train[pick])[:, None]
        # mirror augmentation (a sulcal pattern and its mirror image are both anatomy)
        for axis in (2, 3, 4):
            if rng.random() < 0.5:
                x, y = torch.flip(x, (axis,)), torch.flip(y, (axis,))
        loss = loss_fn(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        done = it + 1
        report(progress, 0.05 + 0.85 * done / iterations, f"iteration {done}/{iterations}: loss {loss.item():.3f}")
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
    net.eval()
    return done


def _validation_dice(net, x_val: np.ndarray, y_val: np.ndarray) -> Dict[str, float]:
    """Mean Dice per tissue of the held-out pairs (:func:`translation_pairs`), 4 decimals."""
    import torch

    with torch.no_grad():
        predicted = np.concatenate([net(torch.from_numpy(x_val[i:i + 1])).numpy() for i in range(len(x_val))])
    per_case = [tissue_dice(decode_labels(p, TISSUE_VALUES), np.asarray(TISSUE_VALUES)[t]) for p, t in zip(predicted, y_val)]
    return {k: round(float(np.mean([c[k] for c in per_case])), 4) for k in per_case[0]}


def _translator_card(name: str, spec: GridSpec, n_phantoms: int, seed: int, done: int, batch_size: int, lr: float,
                     seconds: float, command: str, validate: int, dice: Dict[str, float]) -> Dict[str, Any]:
    """The translator's model card (a ``segmentation`` card with a ``translation`` entry)."""
    return {
        "name": name,
        "task": "segmentation",
        "architecture": {"name": ARCHITECTURE, "kwargs": VNET_KWARGS},
        "input": {**spec.card_input(), "channels": VNET_KWARGS["in_channels"]},
        **spec.card_extra(),
        "translation": {"input": "sulcal skeleton: 0 inside the brain, 11 outside, 60 sulcus",
                        "output": "0 outside the brain or CSF, 100 grey matter, 200 white matter",
                        "encoding": "one-hot of (outside, sulcus); inside is neither"},
        "labels": TISSUE_LABELS,
        "synthetic_demo": True,
        "intended_use": "Demo of the cortical-folding study's skeleton -> grey / white V-Net translation, "
                        "trained on synthetic sulcal phantoms: not for clinical use.",
        "training": {"phantoms": n_phantoms, "seeds": [seed, seed + n_phantoms - 1], "iterations": done,
                     "batch_size": batch_size, "lr": lr, "loss": "DiceCE", "optimiser": "Adam",
                     "augmentation": "random mirroring", "seconds": round(seconds, 1),
                     **({"command": command} if command else {})},
        "validation": ({"phantoms": validate, "seeds": [seed + n_phantoms, seed + n_phantoms + validate - 1],
                        "dice": dice} if validate else {}),
    }


def check_translator(model) -> GridSpec:
    """The grid of a translator model, or :class:`ModelError` for any other model."""
    card = model.card
    if card.task != "segmentation" or not card.extra_get("translation"):
        raise ModelError(f"model {card.name} is not a skeleton -> tissue translation model (no 'translation' in its card)")
    if sorted(lab.value for lab in card.labels) != list(TISSUE_VALUES[1:]):
        raise ModelError(f"model {card.name}: a translation model's labels must be {list(TISSUE_VALUES[1:])}")
    if card.input.spacing_mm is None or card.input.size is None or card.input.channels != VNET_KWARGS["in_channels"]:
        raise ModelError(f"model {card.name}: a translation card needs input.spacing_mm, input.size and 2 input channels")
    spec = GridSpec(tuple(float(v) for v in card.input.spacing_mm), tuple(int(v) for v in card.input.size),  # type: ignore[arg-type]
                    "labels", SULCAL_LABELS)
    if any(s % GRID_MULTIPLE for s in spec.size):
        raise ModelError(f"model {card.name}: input.size must be multiples of {GRID_MULTIPLE}, got {list(spec.size)}")
    return spec


def translate(model, skeleton: Volume, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelToken] = None) -> Volume:
    """The grey / white matter translation (values 0 / 100 / 200) of a sulcal skeleton, on the
    skeleton's own grid (0 outside the model's field of view).

    Args:
        model: a :class:`~clinicalai.models.LoadedModel` of :func:`train_translator`.
        skeleton: label volume with values 0 (inside the brain), 11 (outside), 60 (sulcus).
    """
    spec = check_translator(model)
    report(progress, 0.1, "to the model grid")
    prepared = to_model_grid(skeleton, spec)  # clear InputError for anything but 0 / 11 / 60
    check_cancel(cancel)
    report(progress, 0.3, "translating")
    scores = model.predict(network_input(prepared.tensor)[None])[0]
    check_cancel(cancel)
    labels = decode_labels(scores, TISSUE_VALUES)
    out = prepared.to_input_grid(labels, nearest=True, fill=TISSUE_VALUES[0], modality="SEG", units="label",
                                 metadata={"translation": model.card.name})
    report(progress, 1.0, "done")
    return out

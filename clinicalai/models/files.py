"""A model package's files on disk, read without loading anything.

The lowest layer of :mod:`clinicalai.models` after the card: which weights file and card make
a package, the sha256 of a file, whether a file is a TorchScript archive (code). The resolver
(:mod:`~clinicalai.models.registry`), the loaders (:mod:`~clinicalai.models.package`) and the
importer (:mod:`~clinicalai.models.importing`) all read packages through these.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Tuple

from ..errors import ModelError
from .card import read_card

#: suffixes of a weights file (TorchScript or state dict ``.pt`` / ``.pth`` / ``.ts``, ONNX)
WEIGHT_SUFFIXES = (".pt", ".pth", ".ts", ".onnx")


def sha256_of(path: "str | Path") -> str:
    """The sha256 hex digest of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate_package(path: "str | Path") -> Tuple[Path, Path]:
    """``(weights, card)`` for a weights file, a card, or a stem; else :class:`ModelError`."""
    p = Path(path)
    if p.is_dir():
        raise ModelError(f"{p} is a folder; a MONAI bundle folder needs configs/metadata.json")
    if p.suffix.lower() == ".json":
        return _weights_of_card(p), p
    if p.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ModelError(f"{p.name}: a model is a .pt, .onnx or MONAI bundle folder with a JSON card")
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    card_path = p.with_suffix(".json")
    if not card_path.is_file():
        raise ModelError(
            f"{p.name} has no model card: put {card_path.name} beside it (task, architecture, labels or classes)"
        )
    return p, card_path


def _weights_of_card(card_path: Path) -> Path:
    """The weights a card names (a file name beside it), else the first weights file of its stem."""
    card = read_card(card_path)
    if card.weights:
        if Path(card.weights).name != card.weights:
            raise ModelError(
                f"the card {card_path.name} names weights {card.weights!r}; the weights must be a file name beside the card"
            )
        return card_path.parent / card.weights
    cands = [card_path.with_suffix(s) for s in WEIGHT_SUFFIXES if card_path.with_suffix(s).is_file()]
    if not cands:
        raise ModelError(f"no weights file found beside the card {card_path.name} (.pt or .onnx)")
    return cands[0]


def is_torchscript_archive(path: "str | Path") -> bool:
    """True for a TorchScript zip archive (``constants.pkl`` and ``code/``): a file that runs
    code when loaded. Read as a zip listing only."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)

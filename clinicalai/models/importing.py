"""``clinicalai models import``: a user's model copied into the user model folder.

Above the loaders (:mod:`~clinicalai.models.package`): an imported non-code model is loaded
once from its copy, so a broken package is refused at import rather than at first use. The
folder, the names and the trust store are :mod:`~clinicalai.models.registry`'s.

:func:`import_model` runs in named steps: :func:`_read_source` (card and weights, nothing
loaded) -> :func:`_check_name` -> :func:`_check_digest` -> :func:`_install` (copy into a
temporary folder, check, rename into place) -> trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import ModelError
from .bundle import is_bundle
from .card import ModelCard, parse_card, read_card
from .files import locate_package, sha256_of
from .package import load_model
from .registry import (IMPORT_RECORD, bundled_entries, check_inside, is_model_name, json_depth_guard,
                       read_model_card, trust_model, user_models_dir)


@dataclass
class ImportResult:
    """What :func:`import_model` did."""

    name: str
    path: Path  # the imported card or bundle folder
    weights: Path
    sha256: str
    format: str
    source: Path
    trusted: bool = False
    replaced: bool = False


@dataclass(frozen=True)
class _Source:
    """A model to import, read without loading: a bundle folder or a weights file + card."""

    path: Path
    bundle: bool
    card: ModelCard
    weights: Path


def import_model(source: "str | Path", name: Optional[str] = None, force: bool = False,
                 trust: bool = False) -> ImportResult:
    """Copy a model (weights + card, or a MONAI bundle folder) into the user folder as ``name``.

    The copy is made in a temporary folder and renamed into place, so a failure leaves nothing.
    The weights' sha256 must match the card's when it gives one; the copy's card (or, for a
    bundle, :data:`~clinicalai.models.registry.IMPORT_RECORD`) records it. A non-code model is
    loaded once from the copy (safe loaders) so a broken package is refused now rather than at
    first use. ``trust`` also records the weights as trusted code
    (:func:`~clinicalai.models.registry.trust_model`).

    Raises:
        ModelError: not a model, a sha256 mismatch, a bad name, a name already taken (a user
            model: unless ``force``; a bundled model: always).
    """
    src = _read_source(source)
    name = _check_name(name or (src.path.name if src.bundle else src.weights.stem))
    digest = _check_digest(src)
    root = user_models_dir()
    final = root / name
    if final.exists() and not force:
        raise ModelError(f"a user model called {name!r} exists already in {root}; add --force to replace it")
    existed = final.exists()
    root.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "source": str(src.path.resolve()), "sha256": digest,
              "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    entry_path, weights_rel = _install(src, name, record, final)
    trusted = False
    if trust and src.card.format == "torchscript":
        trust_model(entry_path, source=src.path.resolve())
        trusted = True
    return ImportResult(name, entry_path, final / weights_rel, digest, src.card.format, src.path,
                        trusted=trusted, replaced=existed)


def _read_source(source: "str | Path") -> _Source:
    """The card and weights of the model at ``source`` (nothing loaded or executed).

    Raises:
        ModelError: no such path, a folder that is no bundle, missing weights.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise ModelError(f"{source}: no such model file or folder to import")
    with json_depth_guard(src):
        if src.is_dir():
            if not is_bundle(src):
                raise ModelError(f"{src} is a folder but not a MONAI bundle: configs/metadata.json is missing")
            card, weights = read_model_card(src)
            if not weights.is_file():
                raise ModelError(f"bundle {src.name} has no weights: models/model.ts or models/model.pt is needed")
            return _Source(src, True, card, weights)
        weights, card_path = locate_package(src)
        card = read_card(card_path)
        if not weights.is_file():
            raise ModelError(f"the card {card_path.name} names weights {weights.name}, which do not exist")
        return _Source(src, False, card, weights)


def _check_name(name: str) -> str:
    """``name`` when it can name a user model: a valid name, not a bundled model's."""
    if not is_model_name(name):
        raise ModelError(
            f"{name!r} cannot be a model name: use letters, digits, '.', '_', '-' or '+' (at most 100), "
            "e.g. --name my-model"
        )
    if any(e.name == name for e in bundled_entries()):
        raise ModelError(f"{name!r} is the name of a bundled model; import under another name with --name")
    return name


def _check_digest(src: _Source) -> str:
    """The weights' sha256, refused when the card gives another."""
    digest = sha256_of(src.weights)
    if src.card.sha256 and src.card.sha256 != digest:
        raise ModelError(
            f"{src.weights.name} does not match its card: sha256 is {digest[:12]}..., the card says "
            f"{src.card.sha256[:12]}...; nothing was imported"
        )
    return digest


def _install(src: _Source, name: str, record: Dict[str, Any], final: Path) -> Tuple[Path, Path]:
    """Copy ``src`` into a temporary folder beside ``final``, check the copy (sha256 again;
    a non-code model loads) and rename it onto ``final``; nothing is left on failure.

    Returns ``(entry path, weights path relative to the model folder)``: the entry is the
    bundle folder or the copied card.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".import-{name}.", dir=final.parent))
    try:
        if src.bundle:
            copied_weights = _copy_bundle_with_record(src, tmp, record)
            entry_path, check_path = final, tmp
        else:
            copied_weights = _copy_package(src, tmp, name, record)
            entry_path, check_path = final / f"{name}.json", tmp / f"{name}.json"
        if sha256_of(copied_weights) != record["sha256"]:  # the source changed while it was copied
            raise ModelError(f"{src.weights.name} changed while it was imported; import it again")
        if src.card.format != "torchscript":
            _check_loads(check_path)
        _replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry_path, copied_weights.relative_to(tmp)


def _copy_bundle_with_record(src: _Source, tmp: Path, record: Dict[str, Any]) -> Path:
    """A bundle's files into ``tmp`` with :data:`IMPORT_RECORD` beside them; the copied weights."""
    _copy_bundle(src.path, tmp)
    rel = src.weights.relative_to(src.path)
    (tmp / IMPORT_RECORD).write_text(json.dumps(dict(record, weights=str(rel)), indent=2) + "\n")
    return tmp / rel


def _copy_package(src: _Source, tmp: Path, name: str, record: Dict[str, Any]) -> Path:
    """Weights as ``<name><suffix>`` and the card as ``<name>.json`` (recording the sha256 and
    the import) into ``tmp``; the copied weights."""
    copied_weights = tmp / f"{name}{src.weights.suffix.lower()}"
    shutil.copyfile(src.weights, copied_weights)
    data = src.card.to_dict()
    data.update(weights=copied_weights.name, sha256=record["sha256"], imported_from=record)
    parsed = parse_card(data, f"{name}.json")
    (tmp / f"{name}.json").write_text(json.dumps(parsed.to_dict(), indent=2) + "\n")
    return copied_weights


def _copy_bundle(src: Path, dst: Path) -> None:
    """Copy a bundle folder's files; a symlink leading out of the bundle is refused (the copy
    must not carry files from elsewhere on the machine)."""
    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            check_inside(path, src)
        rel = path.relative_to(src)
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / rel)


def _check_loads(path: Path) -> None:
    """Load a freshly copied non-code model on the CPU (restricted unpickler / onnxruntime)."""
    load_model(path, device="cpu")


def _replace_folder(tmp: Path, final: Path) -> None:
    """Move ``tmp`` onto ``final``; an existing ``final`` (a user model being replaced with
    ``--force``) is moved aside first and removed only once the new one is in place."""
    old = None
    if final.exists():
        old = final.with_name(f".replaced-{final.name}-{os.getpid()}-{time.time_ns()}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

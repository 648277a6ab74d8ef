"""Models by name, the user's model folder, and trust in code-bearing model files.

One resolver for every ``--model`` / ``--corrector`` and every chooser (DESIGN.md, "Model
packages"): a model is a path (weights file, card, MONAI bundle folder) or a NAME, looked up
among

- the bundled demo models, ``Resources/Models/<name>.json`` (source ``bundled``), and
- the user's imported models, ``<user folder>/<name>/`` (source ``user``), where the user
  folder is ``$CLINICALAI_MODELS`` if set, else ``~/.clinicalai/models``.

``clinicalai models import PATH`` copies a model into the user folder
(:func:`clinicalai.models.importing.import_model`), with its sha256 recorded (in the copied
card, or for a bundle in :data:`IMPORT_RECORD`) and checked on every load (:func:`verify_imported`).

TorchScript (a ``.pt`` TorchScript archive, a bundle's ``models/model.ts``) is code: its
``__setstate__`` and ``forward`` run on load and can read or write any file the user can. It
is loaded only when that exact file is trusted: recorded by sha256 in :data:`TRUST_FILE` of the
user folder (:func:`trust_model`, ``models import --trust``), or allowed for one call
(``load_model(..., trust_code=True)``, the CLI's ``--trust-code``, :func:`trust_code_scope`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from ..errors import ModelError
from ..outputs import atomic_output
from .bundle import _read_json, bundle_weights, card_from_bundle, is_bundle, network_from_config
from .card import read_card
from .files import is_torchscript_archive, locate_package, sha256_of

#: Folder of the bundled demo models (trained on synthetic phantoms; not for clinical use).
BUNDLED_MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
#: environment variable naming the user model folder
USER_MODELS_ENV = "CLINICALAI_MODELS"
#: the user model folder when the variable is not set
DEFAULT_USER_MODELS_DIR = Path("~") / ".clinicalai" / "models"
#: sidecar of an imported MONAI bundle: source, time and sha256 of its weights
IMPORT_RECORD = "clinicalai-import.json"
#: trusted code-bearing files by sha256, in the user model folder
TRUST_FILE = "trusted.json"
#: a model name: what a file name and a command-line word can both hold
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def is_model_name(text: str) -> bool:
    """True when ``text`` can name a model (letters, digits, ``. _ + -``; at most 100)."""
    return bool(_NAME.match(text))


class UntrustedModelError(ModelError):
    """A code-bearing model file (TorchScript) that the user has not trusted.

    ``name`` (the model card's), ``path`` and ``sha256`` say which file, so a GUI can show
    them, ask once and call :func:`record_trust` with what it showed (or load with
    ``trust_code=True``).
    """

    def __init__(self, message: str, path: Path, sha256: str, name: str = "") -> None:
        super().__init__(message)
        self.path = Path(path)
        self.sha256 = sha256
        self.name = name or self.path.name


# ------------------------------------------------------------------------------ folders and names
def user_models_dir() -> Path:
    """The user model folder: ``$CLINICALAI_MODELS``, else ``~/.clinicalai/models`` (may not exist yet)."""
    env = os.environ.get(USER_MODELS_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_USER_MODELS_DIR.expanduser()


@dataclass(frozen=True)
class ModelEntry:
    """A model known by name: ``path`` is its card (``.json``) or its MONAI bundle folder."""

    name: str
    path: Path
    source: str  # "bundled" or "user"


def bundled_entries() -> List[ModelEntry]:
    """The bundled demo models by card stem (``Resources/Models/<name>.json``)."""
    if not BUNDLED_MODELS_DIR.is_dir():
        return []
    return [ModelEntry(p.stem, p, "bundled") for p in sorted(BUNDLED_MODELS_DIR.glob("*.json"))]


def user_entries() -> List[ModelEntry]:
    """The imported models: each sub-folder of the user folder holding a MONAI bundle or a card."""
    root = user_models_dir()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir() or not is_model_name(folder.name):
            continue  # temporary folders of an import in progress, stray files
        if is_bundle(folder):
            out.append(ModelEntry(folder.name, folder, "user"))
            continue
        card = folder / f"{folder.name}.json"
        if card.is_file():
            out.append(ModelEntry(folder.name, card, "user"))
    return out


def known_models() -> List[ModelEntry]:
    """Bundled then user models; a user model never hides a bundled one of the same name."""
    bundled = bundled_entries()
    taken = {e.name for e in bundled}
    return bundled + [e for e in user_entries() if e.name not in taken]


def find_model(name: str) -> Optional[ModelEntry]:
    """The known model called ``name``, else ``None``."""
    return next((e for e in known_models() if e.name == name), None)


def _known_list() -> str:
    entries = known_models()
    bundled = [e.name for e in entries if e.source == "bundled"]
    user = [e.name for e in entries if e.source == "user"]
    parts = []
    if bundled:
        parts.append("bundled: " + ", ".join(bundled))
    parts.append("user: " + (", ".join(user) if user else f"none in {user_models_dir()}"))
    return "; ".join(parts)


def unknown_model_error(spec: "str | Path") -> ModelError:
    """The one error every ``--model`` and chooser gives for a name or path that is not a model."""
    return ModelError(
        f"{spec}: no such model file or folder, and no bundled or user model of that name "
        f"({_known_list()}; add one with 'clinicalai models import PATH')"
    )


def resolve_model(spec: "str | Path") -> Path:
    """The path of a model the user named: an existing path (weights, card, bundle folder) as
    it is, else a bundled or user model's name -> its card or bundle folder.

    Raises:
        ModelError: neither an existing path nor a known name (the message lists the names).
    """
    text = str(spec).strip()
    if not text:
        raise ModelError("no model given: name a model file, a MONAI bundle folder or a model name")
    p = Path(text).expanduser()
    if p.exists():
        return p
    if is_model_name(text):
        entry = find_model(text)
        if entry is not None:
            return entry.path
    raise unknown_model_error(text)


# ------------------------------------------------------------------------------ reading without loading
@contextlib.contextmanager
def json_depth_guard(what: "str | Path") -> Iterator[None]:
    """Turn the ``RecursionError`` of a pathologically nested JSON file (``json`` recurses per
    level; 100k levels exhaust Python's stack) into one clear :class:`ModelError`."""
    try:
        yield
    except RecursionError:
        raise ModelError(
            f"{Path(what).name}: its JSON is nested too deeply to be a model card or bundle config; "
            "use the card the model came with"
        ) from None


def read_model_card(spec: "str | Path"):
    """``(card, weights path)`` of a model (path or name) without loading its weights: safe for
    files nobody trusts (nothing is unpickled or executed; ``models info``, the choosers)."""
    path = resolve_model(spec)
    with json_depth_guard(path):
        if path.is_dir():
            if not is_bundle(path):
                raise ModelError(f"{path} is a folder but not a MONAI bundle: configs/metadata.json is missing")
            weights, fmt = bundle_weights(path)
            network = None
            inference = path / "configs" / "inference.json"
            if fmt == "state_dict" and inference.is_file():
                network = network_from_config(_read_json(inference).get("network_def"))
            return card_from_bundle(path, fmt, network), (weights or path / "models" / "model.pt")
        weights, card_path = locate_package(path)
        return read_card(card_path), weights


# ------------------------------------------------------------------------------ symlinks
def check_inside(weights: Path, folder: Path) -> None:
    """Refuse a weights file that is (or passes through) a symlink leading out of its model's
    folder: a model package must not make the loader read files elsewhere on the machine."""
    try:
        target = weights.resolve()
        home = folder.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ModelError(f"{weights.name} cannot be resolved ({exc})") from None
    if home != target.parent and home not in target.parents:
        raise ModelError(
            f"{weights.name} is a link to {target}, outside the model's folder {home}; "
            "copy the weights file into the model's folder instead of linking it"
        )


# ------------------------------------------------------------------------------ imported models
def imported_folder(path: "str | Path") -> Optional[Path]:
    """The user model folder ``<user folder>/<name>`` holding ``path``, else ``None``."""
    root = user_models_dir()
    try:
        rel = Path(path).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return root / rel.parts[0] if rel.parts else None


def verify_imported(folder: Path, weights: Path, card_sha256: Optional[str]) -> None:
    """Check an imported model's weights against the sha256 recorded on import (the card's,
    or the bundle's :data:`IMPORT_RECORD`); on every load, whatever the caller asked."""
    record = folder / IMPORT_RECORD
    expected = card_sha256
    if record.is_file():
        with json_depth_guard(record):
            try:
                data = json.loads(record.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                data = None
        expected = data.get("sha256") if isinstance(data, dict) else None
        if not expected:
            raise ModelError(f"the import record of the user model {folder.name} is damaged; import the model again")
    if not expected:
        raise ModelError(f"the user model {folder.name} has lost the sha256 its import recorded; import it again")
    actual = sha256_of(weights)
    if actual != expected:
        raise ModelError(
            f"the user model {folder.name} was changed after it was imported: {weights.name} has sha256 "
            f"{actual[:12]}..., the import recorded {expected[:12]}...; import it again if the change is yours"
        )


# ------------------------------------------------------------------------------ trust
_TRUST_CODE: contextvars.ContextVar[bool] = contextvars.ContextVar("clinicalai_trust_code", default=False)


@contextlib.contextmanager
def trust_code_scope(allowed: bool = True) -> Iterator[None]:
    """Within the block, code-bearing models load without a trust record (the CLI's
    ``--trust-code``: one run). ``allowed=False`` changes nothing."""
    token = _TRUST_CODE.set(bool(allowed) or _TRUST_CODE.get())
    try:
        yield
    finally:
        _TRUST_CODE.reset(token)


def code_trust_allowed() -> bool:
    """True inside :func:`trust_code_scope`."""
    return _TRUST_CODE.get()


def trust_file() -> Path:
    return user_models_dir() / TRUST_FILE


def trusted_records() -> Dict[str, Dict[str, Any]]:
    """``{sha256: {"name", "source", "trusted_at"}}`` of the trust store (empty when none)."""
    path = trust_file()
    if not path.is_file():
        return {}
    try:
        with json_depth_guard(path):
            data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ModelError):
        return {}  # a damaged store trusts nothing
    records = data.get("trusted") if isinstance(data, dict) else None
    return {k: v for k, v in records.items() if isinstance(v, dict)} if isinstance(records, dict) else {}


def is_trusted(sha256: str) -> bool:
    return sha256 in trusted_records()


def code_bearing_weights(spec: "str | Path") -> Optional[Path]:
    """The TorchScript file of a model (path or name) that would run code when loaded, else ``None``."""
    card, weights = read_model_card(spec)
    if card.format == "torchscript" or (weights.is_file() and is_torchscript_archive(weights)):
        return weights
    return None


def trust_info(spec: "str | Path") -> Dict[str, Any]:
    """What a GUI shows before asking to trust a model: ``{"name", "path", "sha256",
    "code": bool, "trusted": bool}`` (``sha256`` of the code-bearing file, else of the weights)."""
    card, weights = read_model_card(spec)
    code = code_bearing_weights(spec)
    digest = sha256_of(code or weights) if (code or weights).is_file() else ""
    return {"name": card.name, "path": str(code or weights), "sha256": digest, "code": code is not None,
            "trusted": bool(code is not None and digest and is_trusted(digest))}


def trust_model(spec: "str | Path", source: "str | Path | None" = None) -> Dict[str, Any]:
    """Record the code-bearing file of a model (path or name) as trusted, by sha256, in the
    user folder's :data:`TRUST_FILE` (``source``: where it came from, default its path). Returns ``{"name", "sha256", "source"}``. A changed file
    has another sha256 and is untrusted again.

    Raises:
        ModelError: the model holds no code (nothing to trust) or cannot be read.
    """
    code = code_bearing_weights(spec)
    if code is None:
        raise ModelError(f"{spec} holds no code (a state dict or ONNX model): it needs no trust to load")
    card, _ = read_model_card(spec)
    return record_trust(sha256_of(code), card.name, source or code.resolve())


def record_trust(sha256: str, name: str, source: "str | Path") -> Dict[str, Any]:
    """Record the file with this ``sha256`` as trusted in the user folder's :data:`TRUST_FILE`.

    For a GUI that showed the user an :class:`UntrustedModelError`'s name and sha256 and got a
    yes: the digest recorded is the one the user saw, not one computed again, so a file
    replaced meanwhile stays untrusted. Returns ``{"name", "sha256", "source"}``.

    Raises:
        ModelError: ``sha256`` is not a sha256 hex digest.
    """
    digest = str(sha256).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ModelError(f"not a sha256 digest: {sha256!r}")
    entry = {"name": str(name), "source": str(source), "trusted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    records = trusted_records()
    records[digest] = entry
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"trusted": records}, indent=2) + "\n")
    return {"name": entry["name"], "sha256": digest, "source": entry["source"]}


def check_code_trust(weights: Path, name: str, trust_code: bool = False) -> None:
    """Refuse to load the TorchScript file ``weights`` unless it is trusted (by sha256), or
    ``trust_code`` / :func:`trust_code_scope` allows it for this call.

    Raises:
        UntrustedModelError: saying why and how to proceed.
    """
    if trust_code or code_trust_allowed():
        return
    digest = sha256_of(weights)
    if is_trusted(digest):
        return
    raise UntrustedModelError(
        f"{name} ({weights.name}) is TorchScript, which is code that runs when it is loaded and can read or "
        f"write your files, and this file (sha256 {digest[:16]}...) is not trusted: if you know where it comes "
        f"from, trust it once with 'clinicalai models import {weights} --trust' or allow it for one run with "
        "--trust-code; otherwise ask for the model as a state dict with a card, or as ONNX",
        weights, digest, name,
    )

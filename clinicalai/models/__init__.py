"""Model packages: validated cards, safe loading, one inference interface, models by name."""

from pathlib import Path

from .card import ModelCard, parse_card, read_card
from .device import device_summary, resolve_device
from .files import locate_package, sha256_of
from .importing import import_model
from .package import LoadedModel, check_model_output, load_model, save_model
from .registry import (
    BUNDLED_MODELS_DIR,
    UntrustedModelError,
    bundled_entries,
    known_models,
    read_model_card,
    record_trust,
    resolve_model,
    trust_info,
    trust_model,
    unknown_model_error,
    user_models_dir,
)


def bundled_model(name: str) -> Path:
    """Weights path of a bundled demo model by card stem, e.g. ``"cardiac-unet"`` (the same
    unknown-name error as every ``--model``)."""
    entry = next((e for e in bundled_entries() if e.name == name), None)
    if entry is None:
        raise unknown_model_error(name)
    return locate_package(entry.path)[0]


def resolve_model_path(spec: "str | Path") -> Path:
    """A model the user named -> its path (see :func:`~clinicalai.models.registry.resolve_model`)."""
    return resolve_model(spec)


__all__ = [
    "BUNDLED_MODELS_DIR",
    "LoadedModel",
    "ModelCard",
    "UntrustedModelError",
    "bundled_model",
    "check_model_output",
    "device_summary",
    "import_model",
    "known_models",
    "load_model",
    "parse_card",
    "read_card",
    "read_model_card",
    "record_trust",
    "resolve_device",
    "resolve_model",
    "resolve_model_path",
    "save_model",
    "sha256_of",
    "trust_info",
    "trust_model",
    "user_models_dir",
]

"""Model packages: validated cards, safe loading, one inference interface, bundled demo models."""

from pathlib import Path

from .card import ModelCard, parse_card, read_card
from .device import device_summary, resolve_device
from .package import LoadedModel, check_model_output, load_model, save_model, sha256_of

#: Folder of the bundled demo models (trained on synthetic phantoms; not for clinical use).
BUNDLED_MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"


def bundled_model(name: str) -> Path:
    """Path of a bundled demo model's weights by card stem, e.g. ``"cardiac-unet"``."""
    from ..errors import ModelError

    for suffix in (".pt", ".onnx"):
        p = BUNDLED_MODELS_DIR / f"{name}{suffix}"
        if p.is_file():
            return p
    available = sorted(p.stem for p in BUNDLED_MODELS_DIR.glob("*.json"))
    raise ModelError(
        f"bundled model {name!r} is not installed in {BUNDLED_MODELS_DIR}; available: {', '.join(available) or 'none'} "
        "(train the demo models with 'make models')"
    )


def resolve_model_path(spec: "str | Path") -> Path:
    """A model the user named: a path (weights, card or bundle folder) or a bundled model's stem."""
    from ..errors import ModelError

    p = Path(spec)
    if p.exists():
        return p
    if p.suffix == "" and p.parent == Path("."):
        card = BUNDLED_MODELS_DIR / f"{p.name}.json"
        if card.is_file():
            return card
        available = sorted(c.stem for c in BUNDLED_MODELS_DIR.glob("*.json"))
        raise ModelError(
            f"{spec}: no such model file or folder, and no bundled model of that name "
            f"(bundled: {', '.join(available) or 'none'})"
        )
    raise ModelError(f"{spec}: no such model file or folder")


__all__ = [
    "BUNDLED_MODELS_DIR",
    "LoadedModel",
    "ModelCard",
    "bundled_model",
    "device_summary",
    "load_model",
    "parse_card",
    "read_card",
    "resolve_device",
    "resolve_model_path",
    "check_model_output",
    "save_model",
    "sha256_of",
]

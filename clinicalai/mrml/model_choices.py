"""What both GUIs offer and show of models: the models known by name for a task, the device
choices, a card's summary, the path a user's choice stands for, and loaded models kept
between runs.

The engine's model package (``clinicalai.models``) needs pydantic (and torch to load): it is
imported inside the functions, so a panel opens in a fresh Slicer before those packages are
installed and offers the installation on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..errors import ClinicalAIError
from ..progress import ProgressCallback, report

if TYPE_CHECKING:  # pragma: no cover - typing only: the engine's model package is heavy
    from ..models import LoadedModel, ModelCard

#: the warning the panels show above the card of a model trained on phantoms
SYNTHETIC_DEMO_WARNING = "Synthetic demo model trained on phantoms: not for clinical use."


def chosen_model_path(choice: str, default: str) -> Path:
    """The model a user chose (a path, or a bundled or user model's name), else the model
    named ``default``: the engine's one resolver, with its one error for an unknown name."""
    from ..models import resolve_model  # heavy (pydantic): see the module docstring

    return resolve_model(choice or default)


def model_path_from_choice(path: str) -> str:
    """The model path for what a file dialog returned: a MONAI bundle's
    ``configs/metadata.json`` stands for its bundle folder."""
    p = Path(path)
    if p.name == "metadata.json" and p.parent.name == "configs":
        return str(p.parent.parent)
    return str(p)


def model_card(path: "str | Path") -> "ModelCard":
    """The validated card of a model (file, MONAI bundle folder or name) without loading its
    weights: nothing of an untrusted model runs to show its card."""
    from ..models import read_model_card  # heavy (pydantic): see the module docstring

    return read_model_card(path)[0]


def card_summary(card: "ModelCard") -> Dict[str, Any]:
    """What the panels show of a model card (task, labels / classes, intended use, warning)."""
    return {
        "name": card.name,
        "version": card.version,
        "task": card.task,
        "labels": [lab.name for lab in card.labels],
        "classes": list(card.classes),
        "intended_use": card.intended_use,
        "synthetic_demo": bool(card.synthetic_demo),
        "warning": SYNTHETIC_DEMO_WARNING if card.synthetic_demo else "",
        "validation": dict(card.validation),
    }


def describe_model(path: str) -> Dict[str, Any]:
    """Card summary of a model file without loading its weights (for the model chooser)."""
    return card_summary(model_card(path))


def bundled_models(task: Optional[str] = None, default: Optional[str] = None,
                   modality: Optional[str] = None) -> List[Dict[str, Any]]:
    """``[{"name", "path", "task", "synthetic_demo", "source", "modality", "fits"}]`` of the models known by name
    (bundled demo models, then the user's imported ones, ``source`` ``"bundled"`` / ``"user"``;
    optionally of one task), the model named ``default`` first so choosers start on the
    engine's default; ``path`` is the card or bundle folder. Empty while the engine's packages
    (pydantic) are not installed yet, so a panel still opens in a fresh Slicer and offers the
    installation on first use. With the open image's ``modality`` (DICOM code, e.g. "MR"),
    models made for another modality get ``fits`` False and come after those that fit (a card
    or image without a modality fits: no false alarms on untagged NIfTI)."""
    try:
        from ..models import known_models, read_model_card
    except ImportError:
        return []

    out = []
    for entry in known_models():
        try:
            card = read_model_card(entry.path)[0]
        except Exception:  # a broken card is skipped in the chooser, reported when chosen
            continue
        if task and card.task != task:
            continue
        out.append({"name": entry.name, "path": str(entry.path), "task": card.task,
                    "synthetic_demo": card.synthetic_demo, "source": entry.source,
                    "modality": card.input.modality,
                    "fits": not (modality and card.input.modality and card.input.modality != modality)})
    # stable: the default first, then those that fit, each group in its own order
    return sorted(out, key=lambda m: (m["name"] != default, not m["fits"]))


def model_title(entry: Dict[str, Any], with_source: bool = False) -> str:
    """A chooser's text for an entry of :func:`bundled_models`: its name, marked
    "(synthetic demo)", "(PT model)" when made for another modality than the image's and, ``with_source``, "(user)" for a model the user imported."""
    title = entry["name"] + (" (synthetic demo)" if entry["synthetic_demo"] else "")
    if entry.get("fits") is False:
        title += f" ({entry['modality']} model)"
    return title + (" (user)" if with_source and entry.get("source") == "user" else "")


def device_choices() -> List[Dict[str, Any]]:
    """The device selector's entries ``[{"value", "label"}]``: auto, cuda (with GPU name and
    free memory) when there is one, cpu."""
    try:
        from ..models import device_summary  # heavy (torch): see the module docstring

        info = device_summary()
    except ImportError:  # no torch / pydantic yet (fresh Slicer): offered on first use
        return [{"value": "auto", "label": "auto (PyTorch not installed yet)"}, {"value": "cpu", "label": "CPU"}]
    gpu = ""
    if info["cuda"]:
        gpu = f"{info['name']}, {int(info['free_bytes']) / 2**30:.1f} GiB free"
    entries = [{"value": "auto", "label": f"auto ({gpu or 'CPU'})"}]
    if info["cuda"]:
        entries.append({"value": "cuda", "label": f"CUDA: {gpu}"})
    entries.append({"value": "cpu", "label": "CPU"})
    return entries


#: the integrated-gradients baseline entry that leaves the choice to the model card
CARD_BASELINE_LABEL = "model card's default (else zero)"


def baseline_choices() -> List[Dict[str, str]]:
    """The integrated-gradients baseline selector's entries ``[{"value", "label"}]``: the
    model card's default (value ``""``), then the named baselines of the engine
    (:data:`clinicalai.attribution.methods.BASELINES`)."""
    from ..attribution.methods import BASELINES  # heavy (pydantic): see the module docstring

    return [{"value": "", "label": CARD_BASELINE_LABEL}] + [{"value": b, "label": b} for b in BASELINES]


#: the anomaly-map selector's entry for "what the generative model's card says"
CARD_POLARITY_LABEL = "model card's default (else both)"
#: what each map polarity shows, for the selectors
POLARITY_LABELS = {"both": "both (|image - healthy|)", "brighter": "brighter than healthy (FLAIR lesions)",
                   "darker": "darker than healthy (T1 lesions)"}


def polarity_choices() -> List[Dict[str, str]]:
    """The anomaly-map polarity selector's entries ``[{"value", "label"}]``: the generative
    model card's default (value ``""``), then :data:`clinicalai.generative.nets.POLARITIES`."""
    from ..generative.nets import POLARITIES  # heavy (torch): see the module docstring

    return [{"value": "", "label": CARD_POLARITY_LABEL}] + [{"value": p, "label": POLARITY_LABELS[p]} for p in POLARITIES]


class ModelCache:
    """Loaded models by (path, device), so a second run does not reload weights.

    A model whose card or weights file changed on disk since it was loaded is loaded again:
    a re-trained model gives its new answer, and a replaced TorchScript file goes through the
    trust check again instead of running as the file that was trusted."""

    def __init__(self) -> None:
        self._models: Dict[Tuple[str, str], Tuple[Any, "LoadedModel"]] = {}

    def get(self, path: "str | Path", device: str, progress: Optional[ProgressCallback] = None) -> "LoadedModel":
        """The model at ``path`` on ``device``, loaded unless cached; ``progress`` hears
        "loading <name>" (0) before the weights are read and "<name> loaded" (1) after."""
        from ..models import load_model  # heavy (torch): see the module docstring

        name = Path(path).stem if Path(path).suffix else Path(path).name
        report(progress, 0.0, f"loading model {name}")
        key = (str(Path(path).resolve()), device)
        stamp = _model_files_stamp(path)
        cached = self._models.get(key)
        if cached is None or cached[0] != stamp:
            self._models[key] = (stamp, load_model(path, device=device))
        report(progress, 1.0, f"model {name} loaded")
        return self._models[key][1]


def _model_files_stamp(path: "str | Path") -> Any:
    """Size and modification time of a model's card / bundle folder and weights file: what
    tells :class:`ModelCache` that the files changed (``None`` when they cannot be read:
    loading then reports why)."""
    from ..models import read_model_card  # heavy (pydantic): see the module docstring

    try:
        _, weights = read_model_card(path)
        files = [Path(path), Path(weights)]
        return tuple((str(f), f.stat().st_ino, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
    except (ClinicalAIError, OSError):
        return None

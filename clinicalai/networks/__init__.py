"""Networks MONAI does not have, and the allow-list of architectures a model card may name.

A ``state_dict`` model is rebuilt from ``architecture.name`` in its card. Only two families
of names are accepted, so a card can never make ClinicalAI import or call arbitrary code:

- ``monai.networks.nets.<Name>``: any ``torch.nn.Module`` class or factory function exported
  by ``monai.networks.nets``;
- ``clinicalai.networks.<Name>``: a class registered here with :func:`register_architecture`.

Submodules of this package register their networks when imported; :func:`architectures`
imports them all (``pkgutil``), so adding a network needs no edit of this file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

from ..errors import ModelError

MONAI_PREFIX = "monai.networks.nets."
CLINICALAI_PREFIX = "clinicalai.networks."


@dataclass(frozen=True)
class Architecture:
    """An allow-listed network constructor."""

    name: str  # full name as written in a card
    build: Callable[..., Any]
    summary: str = ""
    #: parameter count reported by the source study, with the kwargs that reproduce it
    reference_parameters: Optional[int] = None
    reference_kwargs: Optional[Mapping[str, Any]] = None


_REGISTRY: Dict[str, Architecture] = {}
_DISCOVERED = False


def register_architecture(
    summary: str = "",
    reference_parameters: Optional[int] = None,
    reference_kwargs: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
):
    """Class decorator: allow ``clinicalai.networks.<ClassName>`` in model cards."""

    def decorator(cls):
        full = CLINICALAI_PREFIX + (name or cls.__name__)
        _REGISTRY[full] = Architecture(full, cls, summary or (inspect.getdoc(cls) or "").split("\n")[0],
                                       reference_parameters, dict(reference_kwargs or {}) or None)
        return cls

    return decorator


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _DISCOVERED = True


def architectures() -> Dict[str, Architecture]:
    """Every registered ``clinicalai.networks.*`` architecture, by full name."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def resolve_architecture(name: str) -> Callable[..., Any]:
    """The constructor for an allow-listed architecture name, else :class:`ModelError`."""
    import torch

    if not isinstance(name, str):
        raise ModelError("architecture.name must be a string")
    if name.startswith(CLINICALAI_PREFIX):
        _discover()
        if name not in _REGISTRY:
            known = ", ".join(sorted(_REGISTRY)) or "none"
            raise ModelError(f"unknown ClinicalAI architecture {name!r}; known: {known}")
        return _REGISTRY[name].build
    if name.startswith(MONAI_PREFIX):
        attr = name[len(MONAI_PREFIX):]
        if not attr.isidentifier() or attr.startswith("_"):
            raise ModelError(f"architecture {name!r} is not a valid MONAI network name")
        import monai.networks.nets as nets

        obj = getattr(nets, attr, None)
        if obj is None:
            raise ModelError(f"MONAI has no network called {attr!r} (monai.networks.nets)")
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
            return obj
        if inspect.isfunction(obj) and getattr(obj, "__module__", "").startswith("monai.networks.nets"):
            return obj  # factory functions such as resnet10
        raise ModelError(f"{name!r} is not a network constructor")
    raise ModelError(
        f"architecture {name!r} is not allowed: a state-dict model must name a network from "
        f"'{MONAI_PREFIX}*' or '{CLINICALAI_PREFIX}*'"
    )


#: the largest network a card may describe (parameters + buffers): 500 M values are 2 GB of
#: float32, several times the largest medical imaging networks in MONAI
MAX_NETWORK_VALUES = 500_000_000
#: the largest integer a card kwarg may hold (channels, layers, sizes); bigger ones only ever
#: come from a mistake or an attack and would make even counting the parameters slow
MAX_KWARG_INT = 65_536
#: kwargs that make a network download weights or read them from a path (MONAI ``pretrained``,
#: ``pretrained_path``, torchvision-style ``weights``, ...): a card names its own weights file
_LOADING_KWARGS = re.compile(r"^(pretrain.*|.*_pretrained|weights?|checkpoint|ckpt.*|.*url|url.*|download.*|cache_dir|"
                             r"model_dir|.*_path|path|file|filename|.*_file)$")
_PATH_SUFFIXES = (".pt", ".pth", ".ts", ".ckpt", ".bin", ".safetensors", ".onnx", ".pkl", ".pickle", ".npz",
                  ".npy", ".h5", ".hdf5", ".json", ".zip", ".tar", ".gz")


def check_network_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse card kwargs that would make building the network fetch or read something (a
    download, a weights path) or that ask for an absurd size, before anything is built.

    Raises:
        ModelError: naming the kwarg and why.
    """

    def walk(value: Any, where: str) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int):
            if abs(value) > MAX_KWARG_INT:
                raise ModelError(
                    f"architecture {name}: {where} = {value} is far larger than any network needs "
                    f"(at most {MAX_KWARG_INT}); check the card"
                )
        elif isinstance(value, str):
            low = value.strip().lower()
            if "/" in low or "\\" in low or "://" in low or low.startswith("~") or low.endswith(_PATH_SUFFIXES):
                raise ModelError(
                    f"architecture {name}: {where} = {value[:60]!r} looks like a file path or URL; a card's network "
                    "arguments must not make ClinicalAI read or download files (put the weights beside the card)"
                )
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    for key, value in dict(kwargs).items():
        if _LOADING_KWARGS.search(str(key).lower()) and value not in (False, None, "", 0):
            raise ModelError(
                f"architecture {name}: the argument {key}={str(value)[:60]!r} would make the network download or read "
                "weights by itself; remove it from the card (the weights come from the model file beside the card)"
            )
        walk(value, str(key))


def _count_on_meta(build: Callable[..., Any], kwargs: Mapping[str, Any]) -> Optional[int]:
    """Parameters + buffers of the network built on torch's ``meta`` device (no memory is
    allocated); ``None`` when the constructor cannot run there (it computes with values)."""
    import torch

    try:
        with torch.device("meta"):
            module = build(**dict(kwargs))
        return int(sum(t.numel() for t in (*module.parameters(), *module.buffers())))
    except Exception:  # noqa: BLE001 - the real build below reports argument errors
        return None


def build_network(name: str, kwargs: Optional[Mapping[str, Any]] = None):
    """Instantiate an allow-listed architecture with JSON keyword arguments.

    The kwargs are checked first (:func:`check_network_kwargs`) and the size is counted on the
    ``meta`` device, so a card cannot make this download, read files or allocate an absurd
    network (more than :data:`MAX_NETWORK_VALUES` values).
    """
    build = resolve_architecture(name)
    kwargs = dict(kwargs or {})
    check_network_kwargs(name, kwargs)
    size = _count_on_meta(build, kwargs)
    if size is not None and size > MAX_NETWORK_VALUES:
        raise ModelError(
            f"architecture {name} with the card's kwargs would have {size:,} parameters (more than "
            f"{MAX_NETWORK_VALUES:,}, about {4 * size / 2**30:.0f} GiB); check the channel counts in the card"
        )
    try:
        return build(**kwargs)
    except TypeError as exc:
        raise ModelError(f"architecture {name} does not accept these arguments: {exc}") from None


def count_parameters(module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))

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


def build_network(name: str, kwargs: Optional[Mapping[str, Any]] = None):
    """Instantiate an allow-listed architecture with JSON keyword arguments."""
    build = resolve_architecture(name)
    try:
        return build(**dict(kwargs or {}))
    except TypeError as exc:
        raise ModelError(f"architecture {name} does not accept these arguments: {exc}") from None


def count_parameters(module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))

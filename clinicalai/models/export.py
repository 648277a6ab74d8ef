"""Exporting a torch model package to TorchScript or ONNX, with its card.

The exported file gets a card beside it (same stem, ``.json``): the source card with
``format`` and ``weights`` updated, ``sha256`` recomputed and ``exported_from`` recording the
source. Before anything is written in place, the export is reloaded through
:func:`~clinicalai.models.load_model`'s backends and compared with the torch model on the
same input; a disagreement above ``tolerance`` is an error and leaves nothing behind.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ModelError
from ..outputs import atomic_output
from .card import parse_card
from .layout import inner_network
from .package import LoadedModel, load_weights, sha256_of

EXPORT_FORMATS = ("torchscript", "onnx")
_SUFFIXES = {"torchscript": (".pt", ".ts"), "onnx": (".onnx",)}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how closely the export matches the torch model."""

    path: Path
    card_path: Path
    format: str
    max_abs_diff: float
    example_shape: tuple


def example_input_shape(loaded: LoadedModel, batch: int = 2) -> tuple:
    """``(batch, channels, *spatial)`` from the card: ``input.size``, else 32 voxels per axis
    (a multiple of 16, which encoder-decoder networks with 4 downsamplings need)."""
    card = loaded.card
    spatial = tuple(card.input.size) if card.input.size else (32,) * card.spatial_dims
    return (batch, card.input.channels, *spatial)


def export_model(
    loaded: LoadedModel,
    to: str,
    out: "str | Path",
    example_shape: Optional[Sequence[int]] = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Write ``loaded``'s torch module as ``to`` (``torchscript`` or ``onnx``) at ``out``.

    ONNX files get a dynamic batch axis (input ``"input"``, output ``"output"``). The check
    input is random normal data of ``example_shape`` (default :func:`example_input_shape`).

    Raises:
        ModelError: an ONNX source, an unknown format or suffix, a failed export, or an export
            whose outputs differ from torch by more than ``tolerance``.
    """
    import torch

    if to not in EXPORT_FORMATS:
        raise ModelError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {to!r}")
    out = Path(out)
    if out.suffix.lower() not in _SUFFIXES[to]:
        raise ModelError(f"{out.name}: a {to} export is written as {' or '.join(_SUFFIXES[to])}")
    # the file holds the network itself (a MONAI-layout card keeps its layout: the file computes
    # on (x, y, z)); the check compares what predict() gives, in the engine's order, both ways
    wrapped = loaded.torch_module("export").float().cpu().eval()
    module = inner_network(wrapped)
    shape = tuple(int(s) for s in (example_shape or example_input_shape(loaded)))
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))
    with torch.inference_mode():
        reference = _first_output(wrapped(x)).float().numpy()
    card = loaded.card.to_dict()
    card_path = out.with_suffix(".json")
    with atomic_output(out) as tmp:
        try:
            if to == "torchscript":
                _export_torchscript(module, x, tmp)
            else:
                _export_onnx(module, x[:1], tmp)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - tracing / ONNX conversion raise many types
            raise ModelError(f"the model cannot be exported to {to}: {' '.join(str(exc).split())[:200]}") from None
        card.update(
            format=to,
            weights=out.name,
            sha256=sha256_of(tmp),
            half_precision=bool(card.get("half_precision")) and to == "torchscript",
            exported_from={
                "name": loaded.card.name,
                "file": loaded.path.name,
                "format": loaded.card.format,
                "sha256": sha256_of(loaded.path) if loaded.path.is_file() else None,
            },
        )
        parsed = parse_card(card, card_path.name)
        # our own file, just written from a module already in memory: trusted for this check
        exported = load_weights(tmp, parsed, device="cpu", trust_code=True)
        got = exported.predict(x.numpy())
        diff = float(np.max(np.abs(got - reference))) if got.shape == reference.shape else float("inf")
        if not diff <= tolerance:
            raise ModelError(
                f"the {to} export does not reproduce the torch model (max abs difference {diff:.3g} > {tolerance:g}); "
                "nothing was written"
            )
        with atomic_output(card_path) as card_tmp:
            card_tmp.write_text(json.dumps(parsed.to_dict(), indent=2) + "\n")
    return ExportResult(out, card_path, to, diff, shape)


def _first_output(out):
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


def _export_torchscript(module, x, path: Path) -> None:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        scripted = module
    else:
        try:
            # scripting keeps data-dependent control flow; tracing is the fallback for
            # networks TorchScript's compiler does not accept
            scripted = torch.jit.script(module)
        except Exception:  # noqa: BLE001
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scripted = torch.jit.trace(module, x, check_trace=False)
    torch.jit.save(scripted, str(path))


def _export_onnx(module, x, path: Path) -> None:
    import torch

    kwargs = dict(
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # the TorchScript-based exporter: fast and honours dynamic_axes directly
            torch.onnx.export(module, (x,), str(path), dynamo=False, **kwargs)
        except Exception:  # noqa: BLE001 - fall back to the dynamo exporter (torch >= 2.5)
            torch.onnx.export(module, (x,), str(path), dynamo=True, **kwargs)

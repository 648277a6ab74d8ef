"""Loading and saving model packages safely, and one inference interface over the backends.

A package is a weights file (``.pt`` TorchScript or state dict, ``.onnx``) with a JSON card of
the same stem beside it (:mod:`clinicalai.models.files`), or a MONAI bundle folder (read as
data by :mod:`clinicalai.models.bundle`, loaded by :func:`load_bundle`).

Model files are untrusted input. A state dict is read with ``torch.load(weights_only=True)``,
whose restricted unpickler only rebuilds tensors and plain containers; a pickled full model or
any payload that would import code is refused before it can run. A TorchScript archive *is*
code (its ``__setstate__`` and ``forward`` run on load and may touch any file), so it is
loaded by ``torch.jit.load`` only when the user trusts that exact file (sha256 in the user
model folder's trust store, or ``trust_code`` for one call; :mod:`clinicalai.models.registry`).
A weights file that is a symlink out of its model's folder is refused.
"""

from __future__ import annotations

import json
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

from ..errors import InputError, ModelError
from ..networks import build_network, resolve_architecture
from ..outputs import atomic_output
from .bundle import _read_json, bundle_weights, card_from_bundle, is_bundle, network_from_config
from .card import ModelCard, parse_card, read_card
from .device import resolve_device
from .files import is_torchscript_archive, locate_package, sha256_of
from .layout import is_monai_layout, reverse_spatial, reversed_spatial_axes
from .registry import (check_code_trust, check_inside, code_trust_allowed, imported_folder, json_depth_guard,
                       resolve_model, trust_code_scope, verify_imported)

log = logging.getLogger(__name__)

#: globals a plain state dict pickle imports (torch's own tensor rebuilders and containers)
_STATE_DICT_GLOBALS = ("torch._utils.", "torch.", "collections.OrderedDict", "builtins.set", "builtins.slice")


def _pickle_globals(path: Path) -> Optional[List[str]]:
    """The ``module.name`` globals a pickle (raw, or ``data.pkl`` inside a torch zip) would
    import, read with :mod:`pickletools` (opcodes are parsed, nothing is executed);
    ``None`` when the file is not a pickle at all."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                data = z.read(name)
        else:
            data = path.read_bytes()
        found: List[str] = []
        strings: List[str] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return None


def _refused_global(message: str, path: Path) -> Optional[str]:
    """The global that makes a file more than weights: from torch's message, else by
    scanning the pickle's opcodes."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return m.group(1)
    for g in _pickle_globals(path) or ():
        if not g.startswith(_STATE_DICT_GLOBALS) or g.startswith(("torch.nn.", "torch.jit.")):
            return g
    return None


def _safe_torch_load(path: Path):
    import pickle

    import torch

    try:
        # torch's restricted unpickler: only tensors and plain containers are rebuilt, any
        # other global (a model class, os.system, ...) is refused *before* it is imported.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _pickle_globals(path) is None:
            raise ModelError(f"{path.name} is not a readable PyTorch file (neither a weights archive nor a pickle)") from None
        culprit = _refused_global(str(exc), path)
        if culprit and (".nn." in culprit or culprit.split(".")[0] in ("torch", "monai", "clinicalai", "__main__")):
            what = f"a pickled full model (it needs the class {culprit})"
        elif culprit:
            what = f"Python code that would run on loading ({culprit}); it may be malicious"
        else:
            what = "Python objects other than weights"
        raise ModelError(
            f"{path.name} was refused: it holds {what}. ClinicalAI loads only weights from a model "
            "file; save the model's state_dict (with a card naming its architecture) or a TorchScript model"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelError(f"{path.name} is not a readable PyTorch file ({_one_line(exc)})") from None


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return (text[:limit] + "...") if len(text) > limit else (text or type(exc).__name__)


@dataclass
class LoadedModel:
    """A model ready for inference, whatever its backend.

    Attributes:
        card: the validated card.
        backend: ``"torch"`` (TorchScript or rebuilt state dict) or ``"onnx"``.
        module: the ``torch.nn.Module`` (``None`` for ONNX).
        device: ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
    """

    card: ModelCard
    backend: str
    path: Path
    device: str = "cpu"
    module: Any = None
    session: Any = None
    half: bool = False
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_torch(self) -> bool:
        return self.backend == "torch"

    def torch_module(self, purpose: str = "this method"):
        """The torch module; a clear error for ONNX models (no gradients through onnxruntime)."""
        if self.module is None:
            raise ModelError(
                f"{purpose} needs gradients, which an ONNX model cannot give; use a .pt model "
                "(state dict or TorchScript), or a perturbation method such as occlusion"
            )
        return self.module

    def predict(
        self,
        batch: "np.ndarray | Any",
        batch_size: Optional[int] = None,
        progress: Optional[Callable[[float, str], None]] = None,
    ) -> np.ndarray:
        """Raw network outputs (logits) for ``batch`` of shape ``(N, C, *spatial)`` as float32.

        Runs in chunks of ``batch_size`` (default: all at once). On CUDA out-of-memory the chunk
        is halved; at one sample it falls back to the CPU, with a warning each time.
        """
        x = batch.detach().cpu().numpy() if hasattr(batch, "detach") else np.asarray(batch)
        x = x.astype(np.float32, copy=False)
        expected = self.card.input.channels
        if x.ndim != self.card.spatial_dims + 2:
            raise ModelError(
                f"model {self.card.name} expects {self.card.spatial_dims}D input "
                f"(batch, channels, {'z, ' if self.card.spatial_dims == 3 else ''}y, x), got shape {x.shape}"
            )
        if x.shape[1] != expected:
            raise ModelError(f"model {self.card.name} expects {expected} input channel(s), got {x.shape[1]}")
        n = x.shape[0]
        size = batch_size or max(1, n)
        outputs = []
        start = 0
        while start < n:
            chunk = x[start:start + size]
            try:
                outputs.append(self._run(chunk))
            except Exception as exc:  # noqa: BLE001 - only CUDA OOM is handled, others re-raised
                if not _is_cuda_oom(exc):
                    raise
                self._recover_from_oom()
                where = "CPU" if self.device == "cpu" else "GPU"
                size, device = oom_next_step(size, self.device, exc)
                if device != self.device:
                    warnings.warn("GPU out of memory even for one sample; continuing on the CPU", RuntimeWarning)
                    self.to(device)
                else:
                    warnings.warn(f"{where} out of memory; retrying with batches of {size}", RuntimeWarning)
                continue
            start += len(chunk)
            if progress is not None:
                progress(start / n, f"inference {start}/{n}")
        return np.concatenate(outputs, axis=0)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        if self.backend == "onnx":
            name = self.session.get_inputs()[0].name
            if not is_monai_layout(self.card):
                return np.asarray(self.session.run(None, {name: chunk})[0], dtype=np.float32)
            # a MONAI-layout ONNX graph computes on (x, y, z); callers give and take (z, y, x)
            n_spatial = self.card.spatial_dims
            out = np.asarray(self.session.run(None, {name: np.ascontiguousarray(reverse_spatial(chunk, n_spatial))})[0],
                             dtype=np.float32)
            return np.ascontiguousarray(reverse_spatial(out, n_spatial)) if out.ndim == chunk.ndim else out
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
            if self.half:
                t = t.half()
            out = self.module(t)
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif isinstance(out, dict):
                out = next(iter(out.values()))
            return out.float().cpu().numpy()

    def _recover_from_oom(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def to(self, device: str) -> "LoadedModel":
        """Move a torch model to ``device`` (``cpu`` / ``cuda``)."""
        if self.session is not None and device == "cpu" and self.device != "cpu":
            import onnxruntime as ort

            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        if self.module is not None:
            self.module.to(device)
            if device == "cpu" and self.half:
                self.module.float()
                self.half = False
        self.device = device
        return self


def oom_next_step(size: int, device: str, exc: Optional[BaseException] = None) -> "tuple[int, str]":
    """What to try after an out-of-memory error with batches of ``size`` on ``device``:
    half the batch; at one sample, the CPU; on the CPU already, give up with a clear error."""
    if size > 1:
        return max(1, size // 2), device
    if device != "cpu":
        return 1, "cpu"
    raise ModelError("out of memory even for one sample on the CPU; use a smaller input volume") from exc


#: how out-of-memory failures read: torch's CUDA allocator, cuDNN / cuBLAS, and onnxruntime's
#: CUDA provider (which raises a generic RuntimeException with one of these messages)
_OOM_MESSAGES = ("cuda out of memory", "out of memory", "cudnn_status_alloc_failed",
                 "cublas_status_alloc_failed", "failed to allocate memory")


def _is_cuda_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of torch or onnxruntime (by type or message)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(m in text for m in _OOM_MESSAGES)


#: loaded models kept for reuse, keyed by :func:`_cache_key`; ``None`` (the default) caches
#: nothing. A batch worker turns it on (:func:`enable_model_cache`) so that each of its cases
#: reuses the models instead of reading, checking and building them again.
_MODEL_CACHE: Optional[Dict[tuple, "LoadedModel"]] = None
_CACHE_STATS = {"loads": 0, "hits": 0}


def enable_model_cache() -> None:
    """Keep every model :func:`load_model` loads in this process and return the same object
    for the same file, device and trust (``clinicalai batch`` workers; a process that loads
    user-changed models over time should not)."""
    global _MODEL_CACHE
    if _MODEL_CACHE is None:
        _MODEL_CACHE = {}


def model_cache_stats() -> Dict[str, int]:
    """``{"loads", "hits", "cached"}`` of this process's model cache (all 0 when it is off)."""
    return {**_CACHE_STATS, "cached": len(_MODEL_CACHE or {})}


def _cache_key(path: "str | Path", device: str, verify_sha256: bool, trust_code: bool) -> tuple:
    """The resolved file with its size and mtime (a model replaced on disk is loaded again),
    the device and the trust in force (a model refused untrusted must not come from the cache)."""
    p = resolve_model(path)
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, device, verify_sha256, trust_code or code_trust_allowed())


def load_model(path: "str | Path", device: str = "auto", verify_sha256: bool = True,
               trust_code: bool = False) -> LoadedModel:
    """Load a model package for inference (from this process's cache when a batch worker
    turned it on, :func:`enable_model_cache`).

    Args:
        path: a model name (bundled demo model or imported user model, see
            :func:`~clinicalai.models.registry.resolve_model`), a ``.pt`` / ``.onnx`` file (card
            beside it), its ``.json`` card, or a MONAI bundle folder.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        verify_sha256: check the weights against the card's ``sha256`` when it has one (an
            imported user model is always checked against the sha256 recorded on import).
        trust_code: load a code-bearing (TorchScript) file even when it is not in the trust
            store: the caller asked the user (e.g. a GUI dialog) or the user passed
            ``--trust-code``. Default: only trusted TorchScript loads.

    Raises:
        ModelError: unknown name, missing or invalid card, checksum mismatch, untrusted
            TorchScript (:class:`~clinicalai.models.registry.UntrustedModelError`), unreadable
            file, weights that do not fit the architecture, a weights symlink out of the folder.
        DeviceError: ``cuda`` requested without a GPU.
    """
    if _MODEL_CACHE is None:
        return _load_model(path, device, verify_sha256, trust_code)
    key = _cache_key(path, device, verify_sha256, trust_code)
    if key in _MODEL_CACHE:
        _CACHE_STATS["hits"] += 1
        return _MODEL_CACHE[key]
    model = _load_model(path, device, verify_sha256, trust_code)
    _CACHE_STATS["loads"] += 1
    _MODEL_CACHE[key] = model
    return model


def _load_model(path: "str | Path", device: str, verify_sha256: bool, trust_code: bool) -> LoadedModel:
    """:func:`load_model` without the cache."""
    p = resolve_model(path)
    imported = imported_folder(p)
    with json_depth_guard(p), trust_code_scope(trust_code):
        if p.is_dir():
            weights = bundle_weights(p)[0] if is_bundle(p) else None
            if weights is not None:
                check_inside(weights, p)
                if imported is not None:
                    verify_imported(imported, weights, None)
            return load_bundle(p, device=device, trust_code=trust_code)
        weights, card_path = locate_package(p)
        card = read_card(card_path)
        if not weights.is_file():
            raise ModelError(f"the card {card_path.name} names weights {weights.name}, which do not exist")
        check_inside(weights, card_path.parent)
        if imported is not None:
            verify_imported(imported, weights, card.sha256)
        elif verify_sha256 and card.sha256:
            actual = sha256_of(weights)
            if actual != card.sha256:
                raise ModelError(
                    f"{weights.name} does not match its card: sha256 is {actual[:12]}..., the card says "
                    f"{card.sha256[:12]}... (the file was changed or is not the model the card describes)"
                )
        return load_weights(weights, card, device=device, trust_code=trust_code)


def load_weights(weights: Path, card: ModelCard, device: str = "auto", trust_code: bool = False) -> LoadedModel:
    """Load ``weights`` as the card's ``format`` says (card already validated); TorchScript
    only when trusted or ``trust_code`` (see :func:`load_model`)."""
    dev = resolve_device(device)
    if card.format == "onnx":
        return _load_onnx(weights, card, dev)
    import torch

    if card.format == "torchscript":
        if not is_torchscript_archive(weights):
            raise ModelError(
                f"{weights.name} is not a TorchScript archive, but its card says format 'torchscript'"
            )
        check_code_trust(weights, card.name, trust_code)  # before torch.jit.load runs any of its code
        try:
            module = torch.jit.load(str(weights), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises many types here
            raise ModelError(f"{weights.name} cannot be loaded as TorchScript ({_one_line(exc)})") from None
    else:  # state_dict
        if is_torchscript_archive(weights):
            raise ModelError(f"{weights.name} is a TorchScript archive, but its card says format 'state_dict'")
        resolve_architecture(card.architecture.name)  # refuse a name off the allow-list before reading the file
        state = _safe_torch_load(weights)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
            raise ModelError(f"{weights.name} does not hold a state dict (a mapping of parameter names to tensors)")
        module = build_network(card.architecture.name, card.architecture.kwargs)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ModelError(
                f"the weights in {weights.name} do not fit {card.architecture.name} with the card's kwargs: {detail}"
            ) from None
    module.eval()
    if is_monai_layout(card):
        # the workflows give (z, y, x) arrays; the network was trained on MONAI's (x, y, z)
        module = reversed_spatial_axes(module, card.spatial_dims)
    half = bool(card.half_precision and dev.startswith("cuda"))
    module.to(dev)
    if half:
        module.half()
    return LoadedModel(card=card, backend="torch", path=weights, device=dev, module=module, half=half)


def load_bundle(folder: "str | Path", device: str = "auto", trust_code: bool = False) -> LoadedModel:
    """Load a MONAI bundle folder as a :class:`~clinicalai.models.LoadedModel`.

    ``models/model.ts`` (TorchScript) is preferred, and loads only when trusted or
    ``trust_code`` (:func:`clinicalai.models.load_model`); else ``models/model.pt`` is read as a
    state dict (restricted unpickler) into the allow-listed ``network_def`` of
    ``configs/inference.json``.

    Raises:
        ModelError: not a bundle, bad JSON, missing weights, a ``_target_`` off the allow-list,
            an expression in the network arguments, weights that do not fit.
        DeviceError: ``cuda`` requested without a GPU.
    """
    folder = Path(folder)
    if not is_bundle(folder):
        raise ModelError(f"{folder} is a folder but not a MONAI bundle: configs/metadata.json is missing")
    weights, fmt = bundle_weights(folder)
    if weights is None:
        raise ModelError(f"bundle {folder.name} has no weights: models/model.ts or models/model.pt is needed")
    if fmt == "torchscript":
        card = card_from_bundle(folder, "torchscript")
    else:
        inference_path = folder / "configs" / "inference.json"
        if not inference_path.is_file():
            raise ModelError(
                f"bundle {folder.name} has models/model.pt but no configs/inference.json to say which network it is"
            )
        network = network_from_config(_read_json(inference_path).get("network_def"))
        card = card_from_bundle(folder, "state_dict", network)
    loaded = load_weights(weights, card, device=device, trust_code=trust_code)
    loaded.info["bundle"] = str(folder)
    return loaded


def _load_onnx(weights: Path, card: ModelCard, device: str) -> LoadedModel:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            warnings.warn("onnxruntime has no CUDA support here; running the ONNX model on the CPU", RuntimeWarning)
            device = "cpu"
        else:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(weights), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ModelError(f"{weights.name} cannot be loaded by onnxruntime ({_one_line(exc)})") from None
    return LoadedModel(card=card, backend="onnx", path=weights, device=device, session=session)


def check_model_output(path: "str | Path") -> Path:
    """The path a trained model will be saved to (:func:`save_model`), checked before training
    starts: a ``.pt`` file (its card is written beside it as ``.json``)."""
    path = Path(path)
    if path.suffix.lower() != ".pt":
        raise InputError(f"{path.name}: the model file must end in .pt (its card is written beside it as .json)")
    return path


def save_model(
    module,
    card: Union[ModelCard, Dict[str, Any]],
    path: "str | Path",
) -> Path:
    """Save ``module``'s state dict to ``path`` (``.pt``) and its card beside it, with sha256.

    The card's ``format`` is set to ``state_dict`` and ``weights`` to the file name. Both files
    are written atomically.
    """
    import torch

    path = check_model_output(path)
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    data["format"] = "state_dict"
    data["weights"] = path.name
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(state, str(tmp))
        data["sha256"] = sha256_of(tmp)
        parsed = parse_card(data, path.with_suffix(".json").name)
        with atomic_output(path.with_suffix(".json")) as card_tmp:
            card_tmp.write_text(json.dumps(parsed.to_dict(), indent=2) + "\n")
    return path

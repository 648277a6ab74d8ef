"""MONAI bundle folders as model packages, read as data without running any of the bundle's code.

A bundle (https://docs.monai.io/en/stable/mb_specification.html) is a folder::

    configs/metadata.json      # network_data_format: inputs / outputs, channel_def, ...
    configs/inference.json     # optional: network_def {"_target_": ..., kwargs}, preprocessing
    models/model.ts            # TorchScript, or
    models/model.pt            # a state dict for network_def

MONAI's own ``ConfigParser`` instantiates any ``_target_`` and evaluates ``$`` expressions,
which would let a downloaded bundle run arbitrary Python. So the JSON is parsed here by
hand: ``network_def._target_`` must be on the architecture allow-list
(:func:`clinicalai.networks.resolve_architecture`), its arguments must be plain JSON values,
and the card is derived from ``metadata.json``. Nothing else in the configs is executed.
:func:`clinicalai.models.package.load_bundle` loads the weights this module finds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ModelError
from ..networks import MONAI_PREFIX, resolve_architecture
from ..volume.formats import SEGMENT_COLORS
from .card import ModelCard, parse_card

#: transforms that change nothing the engine has to reproduce (it reads the file itself,
#: keeps channels first and works in float32)
_NEUTRAL = {
    "Compose", "LoadImage", "EnsureChannelFirst", "AddChannel", "EnsureType", "ToTensor", "ToNumpy",
    "CastToType", "ToDevice", "Identity", "SaveImage", "CopyItems", "DeleteItems", "SelectItems", "Invert",
    "FromMetaTensor", "ToMetaTensor",
}


def is_bundle(folder: "str | Path") -> bool:
    """True when ``folder`` looks like a MONAI bundle (has ``configs/metadata.json``)."""
    return (Path(folder) / "configs" / "metadata.json").is_file()


def bundle_weights(folder: Path) -> Tuple[Optional[Path], str]:
    """``(weights, format)`` of a MONAI bundle: ``models/model.ts`` (TorchScript) first, else
    ``models/model.pt`` (state dict; ``None`` when neither file exists)."""
    ts, pt = folder / "models" / "model.ts", folder / "models" / "model.pt"
    if ts.is_file():
        return ts, "torchscript"
    return (pt if pt.is_file() else None), "state_dict"


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"bundle file {path.parent.name}/{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"bundle file {path.parent.name}/{path.name} must hold a JSON object")
    return data


def _plain_json(value: Any, where: str) -> Any:
    """Refuse config values that MONAI would evaluate or instantiate (``$expr``, ``@ref``,
    ``%macro``, nested ``_target_``): this loader never runs bundle code."""
    if isinstance(value, str) and value[:1] in ("$", "@", "%"):
        raise ModelError(
            f"bundle network_def.{where} is an expression ({value[:40]!r}); ClinicalAI does not evaluate "
            "bundle expressions: write the plain value, or export the bundle's model to TorchScript (models/model.ts)"
        )
    if isinstance(value, dict):
        if "_target_" in value:
            raise ModelError(
                f"bundle network_def.{where} instantiates {value['_target_']!r}; only the network itself may be "
                "instantiated (its arguments must be plain values)"
            )
        return {k: _plain_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def network_from_config(network_def: Any) -> Tuple[str, Dict[str, Any]]:
    """``(architecture name, kwargs)`` from a bundle's ``network_def`` (not instantiated).

    A bare ``_target_`` such as ``"UNet"`` means ``monai.networks.nets.UNet`` (MONAI looks
    names up in its own namespaces). The name is checked against the allow-list here.
    """
    if not isinstance(network_def, dict) or not isinstance(network_def.get("_target_"), str):
        raise ModelError("bundle configs/inference.json needs 'network_def' with a '_target_' to rebuild model.pt")
    target = network_def["_target_"].strip()
    if target[:1] in ("$", "@", "%"):
        raise ModelError(f"bundle network_def._target_ {target!r} is an expression; ClinicalAI does not evaluate it")
    name = target if "." in target else MONAI_PREFIX + target
    parts = name.split(".")
    if name.startswith(MONAI_PREFIX) and len(parts) == 5 and not any(p.startswith("_") for p in parts):
        # monai.networks.nets.unet.UNet: the submodule path of a public network; the
        # allow-list check below still requires monai.networks.nets.UNet to exist
        name = MONAI_PREFIX + parts[-1]
    resolve_architecture(name)  # ModelError when not allow-listed
    kwargs = {
        k: _plain_json(v, k) for k, v in network_def.items() if k != "_target_" and not k.startswith("_")
    }
    return name, kwargs


def _channel_names(spec: Dict[str, Any]) -> Dict[int, str]:
    names: Dict[int, str] = {}
    for key, value in (spec.get("channel_def") or {}).items():
        try:
            names[int(key)] = str(value)
        except (TypeError, ValueError):
            continue
    return dict(sorted(names.items()))


def _int_shape(shape: Any) -> Optional[List[int]]:
    # bundles may write symbolic shapes ("16*n"); only concrete ones become input.size
    if isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape):
        return list(shape)
    return None


def _walk_transforms(config: Any):
    if isinstance(config, dict):
        if isinstance(config.get("_target_"), str):
            yield config
        for v in config.values():
            yield from _walk_transforms(v)
    elif isinstance(config, list):
        for v in config:
            yield from _walk_transforms(v)


def _short(target: str) -> str:
    """``monai.transforms.Spacingd`` -> ``Spacing`` (the dictionary ``d`` dropped)."""
    name = target.split(".")[-1]
    return name[:-1] if name.endswith("d") and name[:-1] in _KNOWN_ARRAY_NAMES else name


_KNOWN_ARRAY_NAMES = _NEUTRAL | {
    "Orientation", "Spacing", "ScaleIntensityRange", "ScaleIntensity", "NormalizeIntensity",
    "ScaleIntensityRangePercentiles", "CropForeground", "Activations", "AsDiscrete",
}


def _is_plain(value: Any) -> bool:
    """A number, a string that is no expression, or a list of those."""
    if isinstance(value, list):
        return all(_is_plain(v) and not isinstance(v, list) for v in value)
    return isinstance(value, (int, float, bool)) or isinstance(value, str) and value[:1] not in ("$", "@", "%")


class _Reader:
    """Reads transform arguments as plain values: ``@name`` references to plain top-level
    values of the config are followed (data, not code); expressions are refused, naming the
    transform and argument."""

    def __init__(self, config: Dict[str, Any]):
        self.config = config

    def arg(self, t: Dict[str, Any], key: str, default: Any = None) -> Any:
        value = t.get(key, default)
        if isinstance(value, str) and value.startswith("@") and _is_plain(self.config.get(value[1:])):
            value = self.config[value[1:]]
        if isinstance(value, str) and value[:1] in ("$", "@", "%"):
            raise ModelError(
                f"bundle transform {t['_target_']} has {key} = {value[:40]!r}, an expression ClinicalAI does not "
                "evaluate; write the plain value in the bundle's configs/inference.json"
            )
        return value


def _active_steps(inference: Dict[str, Any], section: str):
    """``(transform dict, _target_, short name)`` of each transform in ``section`` of
    inference.json that changes what the network sees (loading and type steps left out)."""
    for t in _walk_transforms(inference.get(section, {})):
        name = _short(t["_target_"])
        if name not in _NEUTRAL:
            yield t, t["_target_"], name


def _refuse(target: str, why: str) -> ModelError:
    return ModelError(f"bundle transform {target} cannot be honoured: {why}; ClinicalAI would not run the model "
                      "as MONAI does, so it refuses it (edit configs/inference.json or convert the model with a card)")


def _preprocessing(inference: Dict[str, Any]) -> Dict[str, Any]:
    """The card's ``input`` fields from the bundle's ``preprocessing``, read as data.

    Honoured: ``Orientation(d)`` axcodes, ``Spacing(d)`` pixdim / mode, ``ScaleIntensityRange(d)``,
    ``ScaleIntensity(d)`` (to 0..1), ``NormalizeIntensity(d)`` (nonzero), ``ScaleIntensity
    RangePercentiles(d)`` (to 0..1, clipped), ``CropForeground(d)`` (margin, default select);
    loading and type conversions are neutral. Anything else raises :class:`ModelError`
    naming the transform.
    """
    reader = _Reader(inference)
    found: Dict[str, Any] = {"layout": {"kind": "monai", "axcodes": None}}
    seen_spacing = False
    for t, target, name in _active_steps(inference, "preprocessing"):
        if name == "Orientation":
            if seen_spacing:
                raise _refuse(target, "it comes after Spacingd (the engine reorients first, as MONAI bundles do)")
            found["layout"]["axcodes"] = reader.arg(t, "axcodes")
        elif name == "Spacing":
            pixdim = reader.arg(t, "pixdim")
            if not isinstance(pixdim, list) or not all(isinstance(p, (int, float)) for p in pixdim):
                raise _refuse(target, f"pixdim {pixdim!r} is not a list of numbers")
            mode = reader.arg(t, "mode", "bilinear")
            mode = mode[0] if isinstance(mode, list) else mode
            if mode not in ("bilinear", "nearest"):
                raise _refuse(target, f"mode {mode!r} (bilinear or nearest are supported)")
            found["spacing_mm"] = [float(p) for p in pixdim]
            found["resample_mode"] = mode
            seen_spacing = True
        elif name in ("ScaleIntensityRange", "ScaleIntensity", "NormalizeIntensity", "ScaleIntensityRangePercentiles"):
            if "normalization" in found:
                raise _refuse(target, "a second intensity transform")
            found["normalization"] = _normalization(name, t, reader)
        elif name == "CropForeground":
            if t.get("select_fn") is not None or t.get("channel_indices") is not None:
                raise _refuse(target, "a custom select_fn / channel_indices")
            found["crop_foreground"] = {"threshold": 0.0, "margin": reader.arg(t, "margin", 0),
                                        "after_normalization": "normalization" in found}
            if isinstance(reader.arg(t, "allow_smaller"), bool):
                found["crop_foreground"]["allow_smaller"] = reader.arg(t, "allow_smaller")
        else:
            raise _refuse(target, "it is not one of the transforms ClinicalAI reproduces (Orientationd, Spacingd, "
                                  "ScaleIntensityRanged, ScaleIntensityd, NormalizeIntensityd, "
                                  "ScaleIntensityRangePercentilesd, CropForegroundd)")
    return found


def _normalization(name: str, t: Dict[str, Any], reader: _Reader) -> Dict[str, Any]:
    target = t["_target_"]
    if name == "ScaleIntensityRange":
        vals = {k: reader.arg(t, k) for k in ("a_min", "a_max", "b_min", "b_max")}
        if not all(isinstance(v, (int, float)) for k, v in vals.items() if k in ("a_min", "a_max")):
            raise _refuse(target, "a_min and a_max must be numbers")
        return {"kind": "range", **{k: float(v) for k, v in vals.items() if v is not None},
                "clip": bool(reader.arg(t, "clip", False))}
    if name == "ScaleIntensity":
        if (reader.arg(t, "minv", 0.0), reader.arg(t, "maxv", 1.0)) != (0.0, 1.0) or t.get("factor") is not None:
            raise _refuse(target, "only the default minv=0, maxv=1 (min-max to 0..1) is supported")
        return {"kind": "minmax"}
    if name == "NormalizeIntensity":
        if t.get("subtrahend") is not None or t.get("divisor") is not None:
            raise _refuse(target, "subtrahend / divisor")
        return {"kind": "zscore", "nonzero": bool(reader.arg(t, "nonzero", False))}
    lo, hi = reader.arg(t, "lower"), reader.arg(t, "upper")
    if (reader.arg(t, "b_min"), reader.arg(t, "b_max"), bool(reader.arg(t, "clip", False))) != (0.0, 1.0, True):
        raise _refuse(target, "only b_min=0, b_max=1, clip=true is supported")
    return {"kind": "percentile", "lower": float(lo), "upper": float(hi)}


def _inference_settings(inference: Dict[str, Any]) -> Dict[str, Any]:
    """The card's ``inference`` (inferer) and ``postprocessing`` keys from inference.json."""
    reader = _Reader(inference)
    out: Dict[str, Any] = {}
    inferer = inference.get("inferer")
    if isinstance(inferer, dict) and isinstance(inferer.get("_target_"), str):
        name = inferer["_target_"].split(".")[-1]
        if name == "SlidingWindowInferer":
            roi = reader.arg(inferer, "roi_size")
            if not isinstance(roi, list) or not all(isinstance(r, int) and r > 0 for r in roi):
                raise _refuse(inferer["_target_"], f"roi_size {roi!r} is not a list of positive integers")
            out["inference"] = {"inferer": "sliding_window", "roi_size": roi,
                                "sw_batch_size": int(reader.arg(inferer, "sw_batch_size", 1)),
                                "overlap": float(reader.arg(inferer, "overlap", 0.25)),
                                "mode": str(reader.arg(inferer, "mode", "constant"))}
        elif name == "SimpleInferer":
            out["inference"] = {"inferer": "simple"}
        else:
            raise _refuse(inferer["_target_"], "only SlidingWindowInferer and SimpleInferer are supported")
    post: Dict[str, Any] = {}
    for t, target, name in _active_steps(inference, "postprocessing"):
        if name == "Activations":
            if reader.arg(t, "softmax", False):
                post["activation"] = "softmax"
            elif reader.arg(t, "sigmoid", False):
                post["activation"] = "sigmoid"
        elif name == "AsDiscrete":
            threshold = reader.arg(t, "threshold")
            if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
                post["threshold"] = float(threshold)
        else:
            raise _refuse(target, "it is not a post-processing step ClinicalAI reproduces (Activationsd, "
                                  "AsDiscreted, Invertd, SaveImaged)")
    if post:
        out["postprocessing"] = post
    return out


def card_from_bundle(folder: "str | Path", weights_format: str, network: Optional[Tuple[str, Dict[str, Any]]] = None) -> ModelCard:
    """A :class:`ModelCard` derived from ``configs/metadata.json`` (and inference.json).

    The first input of ``network_data_format`` gives channels and spatial shape; the first
    output's ``channel_def`` gives label names (segmentation, background channel 0 left out)
    or class names (classification). Bundle fields without a card field are kept as extra
    keys under ``"bundle"``.
    """
    folder = Path(folder)
    meta = _read_json(folder / "configs" / "metadata.json")
    inference_path = folder / "configs" / "inference.json"
    inference = _read_json(inference_path) if inference_path.is_file() else {}
    fmt = meta.get("network_data_format") or {}
    inputs = fmt.get("inputs") or {}
    outputs = fmt.get("outputs") or {}
    if not isinstance(inputs, dict) or not isinstance(outputs, dict) or not inputs or not outputs:
        raise ModelError(
            f"bundle {folder.name}: configs/metadata.json needs network_data_format with 'inputs' and 'outputs'"
        )
    in_spec = next(iter(inputs.values()))
    out_spec = next(iter(outputs.values()))
    out_kind = str(out_spec.get("format", "")).lower()
    out_type = str(out_spec.get("type", "")).lower()
    if "segment" in out_kind or out_type == "image" and "segment" in str(meta.get("task", "")).lower():
        task = "segmentation"
    elif "class" in out_kind or out_type in ("probabilities", "vector", "tensor") or "classif" in str(meta.get("task", "")).lower():
        task = "classification"
    else:
        task = "segmentation" if out_type == "image" else "classification"
    size = _int_shape(in_spec.get("spatial_shape"))
    kwargs = network[1] if network else {}
    spatial_dims = len(size) if size else int(kwargs.get("spatial_dims", 3))
    channels = _channel_names(out_spec)
    card: Dict[str, Any] = {
        "name": str(meta.get("name") or folder.name),
        "version": str(meta.get("version") or "0.0.0"),
        "task": task,
        "format": weights_format,
        "spatial_dims": spatial_dims,
        "input": {"channels": int(in_spec.get("num_channels", 1) or 1)},
        "intended_use": str(meta.get("intended_use") or meta.get("description") or ""),
        "bundle": {
            "folder": str(folder),
            "description": meta.get("description", ""),
            "task": meta.get("task", ""),
            "authors": meta.get("authors", ""),
            "references": meta.get("references", []),
            "monai_version": meta.get("monai_version", ""),
            "input_modality": in_spec.get("modality", ""),
            "value_range": in_spec.get("value_range"),
            "output_channels": int(out_spec.get("num_channels", 0) or 0),
        },
    }
    if size:
        card["input"]["size"] = size
    if isinstance(in_spec.get("modality"), str) and in_spec["modality"].strip():
        card["input"]["modality"] = in_spec["modality"].strip()
    card["input"].update(_preprocessing(inference))
    card.update(_inference_settings(inference))
    if "spacing_mm" in card["input"] and len(card["input"]["spacing_mm"]) != spatial_dims:
        raise ModelError(f"bundle {folder.name}: Spacingd pixdim has {len(card['input']['spacing_mm'])} values "
                         f"for a {spatial_dims}D network")
    if task == "segmentation":
        n_out = int(out_spec.get("num_channels", 0) or 0)
        names = channels or {c: f"label {c}" for c in range(1, n_out)}
        card["labels"] = [
            {"name": nm, "value": v, "color": SEGMENT_COLORS[(v - 1) % len(SEGMENT_COLORS)]} for v, nm in names.items() if v >= 1
        ]
    else:
        n_out = int(out_spec.get("num_channels", 0) or len(channels) or 0)
        card["classes"] = [channels.get(c, f"class {c}") for c in range(max(n_out, len(channels)))]
    if network:
        card["architecture"] = {"name": network[0], "kwargs": network[1]}
    return parse_card(card, f"derived from {folder.name}/configs/metadata.json")

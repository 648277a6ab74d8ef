"""The model card: what a model file cannot say about itself (DESIGN.md, "Model packages").

Validated with pydantic; every problem is reported as a sentence naming the field, so a user
who edits a card by hand knows what to fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import InputError, ModelError
from ..volume.spatial import check_axcodes

Task = Literal["segmentation", "mask-correction", "classification", "anomaly-detection"]
Format = Literal["torchscript", "state_dict", "onnx"]
TASKS = get_args(Task)
FORMATS = get_args(Format)


class _Loose(BaseModel):
    # more keys are welcome in a card (DESIGN.md); they are kept, not rejected
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ArchitectureSpec(_Loose):
    name: str = Field(description="allow-listed constructor, e.g. monai.networks.nets.UNet")
    kwargs: Dict[str, Any] = Field(default_factory=dict)


NormalizationKind = Literal["none", "minmax", "percentile", "zscore", "scale", "range"]
NORMALIZATION_KINDS = get_args(NormalizationKind)


class Normalization(_Loose):
    """Intensity normalisation of each input channel.

    ``range`` is MONAI's ``ScaleIntensityRange``: ``[a_min, a_max]`` -> ``[b_min, b_max]``,
    clipped when ``clip``. ``zscore`` uses the non-zero voxels unless ``nonzero`` is false
    (MONAI ``NormalizeIntensity(nonzero=...)``; cards without the key keep the non-zero rule).
    """

    kind: NormalizationKind = "none"
    lower: Optional[float] = None  # percentile bounds for "percentile"; value range for "minmax"
    upper: Optional[float] = None
    scale: Optional[float] = None  # for "scale": value / scale
    a_min: Optional[float] = None  # "range"
    a_max: Optional[float] = None
    b_min: Optional[float] = None  # default 0
    b_max: Optional[float] = None  # default 1
    clip: Optional[bool] = None  # default false
    nonzero: Optional[bool] = None  # "zscore"
    # "percentile" of a 2D slice segmenter: where its fine pass takes the percentiles from. "volume"
    # (default, the training rule) or "crop": the heart box of the coarse pass, all slices, so that
    # what lies far from the heart (a large field of view, a bright organ) cannot change the
    # contrast the network sees (docs/heldout.md, "Normalised on the crop")
    region: Optional[Literal["volume", "crop"]] = None

    @model_validator(mode="after")
    def _range_bounds(self):
        if self.kind == "range" and (self.a_min is None or self.a_max is None):
            raise ValueError("normalization kind 'range' needs a_min and a_max (MONAI ScaleIntensityRange)")
        if self.region is not None and self.kind != "percentile":
            raise ValueError(f"normalization 'region' applies to kind 'percentile', not {self.kind!r}")
        return self


#: the two array layouts a network may have been trained with (DESIGN.md, "Model packages")
LayoutKind = Literal["engine", "monai"]
LAYOUT_KINDS = get_args(LayoutKind)


class InputLayout(_Loose):
    """How the network saw its arrays.

    ``engine``: the workflow's own convention (DESIGN.md; segmentation and attribution: arrays
    ``(z, y, x)`` of the input grid or of its LPS reorientation; PET: ``(X, Y, Z)`` after
    reorientation to LPS). ``monai``: arrays ``(x, y, z)`` as MONAI's readers give them, after
    reorientation to ``axcodes`` (MONAI ``Orientationd``; ``null``: no reorientation, the file's
    own voxel order).
    """

    kind: LayoutKind = "engine"
    axcodes: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _monai_default_ras(cls, data):
        # MONAI's default reorientation target; an explicit null keeps the file's voxel order
        if isinstance(data, dict) and data.get("kind") == "monai" and "axcodes" not in data:
            data = {**data, "axcodes": "RAS"}
        return data

    @field_validator("axcodes")
    @classmethod
    def _axcodes(cls, v):
        try:
            return None if v is None else check_axcodes(v)
        except InputError as exc:
            raise ValueError(str(exc)) from None


class CropForeground(_Loose):
    """MONAI ``CropForegroundd`` on the (unnormalised) image: the box of voxels above
    ``threshold``, grown by ``margin`` voxels per side."""

    threshold: float = 0.0
    margin: Union[int, Tuple[int, ...]] = 0
    #: the box is found on the normalised image (the bundle normalises before it crops)
    after_normalization: bool = False
    #: MONAI's ``allow_smaller`` (unset: MONAI's default, which pads a box grown past the image)
    allow_smaller: Optional[bool] = None


class InputSpec(_Loose):
    channels: int = Field(1, ge=1)
    spacing_mm: Optional[Tuple[float, ...]] = None
    size: Optional[Tuple[int, ...]] = None
    normalization: Normalization = Field(default_factory=Normalization)
    units: Optional[str] = None
    layout: InputLayout = Field(default_factory=InputLayout)
    #: interpolation of the resampling to ``spacing_mm`` (MONAI ``Spacingd`` mode) for a
    #: MONAI-layout model: ``bilinear`` (default) or ``nearest``
    resample_mode: Optional[Literal["bilinear", "nearest"]] = None
    crop_foreground: Optional[CropForeground] = None
    #: what the model was made for; inputs far from it get a warning (never a refusal)
    modality: Optional[str] = None  # DICOM Modality (MR, CT, PT)
    intensity_range: Optional[Tuple[float, float]] = None  # raw voxel values seen in training
    fov_mm: Optional[Tuple[float, ...]] = None  # physical field of view (x, y, z) of training inputs
    #: a segmenter whose median per-slice confidence (mean max-softmax over what it drew) falls
    #: below this is unsure of the image: a warning after the run (an image unlike its training
    #: data, e.g. a brain given to a cardiac model, which no tag or field of view reveals)
    min_median_confidence: Optional[float] = Field(None, gt=0.0, lt=1.0)

    @field_validator("spacing_mm")
    @classmethod
    def _positive_spacing(cls, v):
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("every spacing value must be positive (mm)")
        return v

    @field_validator("size")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("every size value must be a positive number of voxels")
        return v


class Label(_Loose):
    name: str
    value: int = Field(ge=1)
    color: Optional[Tuple[float, float, float]] = None  # RGB in 0..1
    terminology: Optional[Dict[str, Any]] = None


class ModelCard(_Loose):
    """A validated model card."""

    name: str
    version: str = "0.0.0"
    task: Task
    format: Format
    architecture: Optional[ArchitectureSpec] = None
    spatial_dims: Literal[2, 3] = 3
    input: InputSpec = Field(default_factory=InputSpec)
    labels: List[Label] = Field(default_factory=list)
    classes: List[str] = Field(default_factory=list)
    cam_layer: Optional[str] = None
    sha256: Optional[str] = None
    weights: Optional[str] = None  # file name beside the card; default: card stem + .pt/.onnx
    half_precision: bool = False  # the card allows float16 inference on CUDA
    intended_use: str = ""
    synthetic_demo: bool = False
    training: Dict[str, Any] = Field(default_factory=dict)
    validation: Dict[str, Any] = Field(default_factory=dict)

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v):
        if v is not None:
            v = v.lower()
            if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
                raise ValueError("must be 64 hexadecimal characters (a SHA-256 digest)")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        problems = consistency_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ------------------------------------------------------------------ helpers
    def extra_get(self, key: str, default: Any = None) -> Any:
        return (self.model_extra or {}).get(key, default)

    def label_names(self) -> Dict[int, str]:
        return {lab.value: lab.name for lab in self.labels}

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def consistency_problems(data: Dict[str, Any]) -> List[str]:
    """Problems between fields of a card (a plain dict, validated or not), as sentences.

    Run on the raw dict too when field validation fails, so a user sees every problem at once.
    """
    problems: List[str] = []
    if not isinstance(data, dict):
        return problems
    fmt, task = data.get("format"), data.get("task")
    if fmt == "state_dict" and not data.get("architecture"):
        problems.append("a state_dict model needs 'architecture' (name and kwargs) to be rebuilt")
    if task in ("segmentation", "mask-correction") and not data.get("labels"):
        problems.append(f"a {task} model needs 'labels' (name and value of each structure)")
    if task == "classification" and not data.get("classes"):
        problems.append("a classification model needs 'classes' (one name per class)")
    labels = data.get("labels") or []
    values = [lab.get("value") for lab in labels if isinstance(lab, dict)] if isinstance(labels, list) else []
    if len(values) != len(set(map(str, values))):
        problems.append("label values must be unique")
    dims = data.get("spatial_dims", 3)
    inp = data.get("input") or {}
    if isinstance(inp, dict) and dims in (2, 3):
        for dim_field in ("spacing_mm", "size"):
            v = inp.get(dim_field)
            if isinstance(v, (list, tuple)) and len(v) != dims:
                problems.append(f"input.{dim_field} needs {dims} values for a {dims}D model, it has {len(v)}")
    return problems


def _describe(error: ValidationError, source: str, data: Any = None) -> str:
    problems = []
    for e in error.errors():
        if not e["loc"] and e["type"] == "value_error":
            continue  # the cross-field checks: listed one by one below
        where = ".".join(str(p) for p in e["loc"]) or "card"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "is missing"
        elif e["type"] == "literal_error":
            msg = f"must be one of {e['ctx']['expected']}"
        problems.append(f"{where} {msg}" if e["type"] in ("missing", "literal_error") else f"{where}: {msg}")
    # field errors stop pydantic before the cross-field checks; add those from the raw dict
    if isinstance(data, dict):
        problems += consistency_problems(data)
    src = f"{source} " if source else ""
    return f"model card {src}is not valid ({len(problems)} problem{'s' if len(problems) != 1 else ''}): " + "; ".join(problems)


def parse_card(data: Any, source: str = "") -> ModelCard:
    """Validate a card given as a dict; :class:`ModelError` lists every problem."""
    if not isinstance(data, dict):
        raise ModelError(f"model card {source or ''} must be a JSON object (key: value pairs)".replace("  ", " "))
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ModelError(_describe(exc, source, data)) from None


def store_heldout(card_path: "str | Path", entry: Dict[str, Any]) -> Path:
    """Store ``entry`` (figures on a held-out family, with the command that made them) as the
    ``heldout`` of the card at ``card_path`` (:func:`store_card_entry`)."""
    return store_card_entry(card_path, "heldout", entry)


def store_card_entry(card_path: "str | Path", key: str, entry: Dict[str, Any]) -> Path:
    """Store ``entry`` as ``key`` of the card at ``card_path``, atomically; the weights, and so
    the card's sha256, are not touched. The card must read as a valid card before and after."""
    from ..outputs import write_json

    card_path = Path(card_path)
    read_card(card_path)  # a broken or missing card stops here, unchanged
    data = json.loads(card_path.read_text())
    data[key] = entry
    parse_card(data, card_path.name)
    write_json(data, card_path)
    return card_path


def read_card(path: "str | Path") -> ModelCard:
    """Read and validate a JSON model card file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no model card found: {path} (a model needs a JSON card with the same name)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {path.name} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelError(f"model card {path.name} is nested too deeply to be a model card") from None
    return parse_card(data, path.name)


def segments_from_card(card: Any, default_color: Optional[Tuple[float, float, float]] = None,
                       terminology: bool = True) -> List[Dict[str, Any]]:
    """A card's labels as ``Volume.metadata["segments"]`` entries, in card order.

    Each entry is ``{"name", "value", "color"[, "terminology"]}``: ``color`` is the card's RGB
    (0..1) or ``default_color`` when it gives none (``None`` lets the viewer choose);
    ``terminology`` adds the label's coded terminology (or ``None``). A card without labels,
    or no card, gives ``[]``.
    """
    out: List[Dict[str, Any]] = []
    for lab in getattr(card, "labels", []) or []:
        entry: Dict[str, Any] = {"name": lab.name, "value": int(lab.value),
                                 "color": tuple(lab.color) if lab.color else default_color}
        if terminology:
            entry["terminology"] = lab.terminology
        out.append(entry)
    return out

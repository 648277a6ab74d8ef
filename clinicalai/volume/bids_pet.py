"""The BIDS-PET sidecar (``sub-01_pet.json`` beside ``sub-01_pet.nii.gz``) as PET tags.

A NIfTI has no units, weight, dose or times in its header; BIDS-PET puts them in a JSON sidecar
with the same stem. :func:`read_bids_pet_sidecar` turns it into the dictionary a DICOM PET
gives (:func:`clinicalai.volume.io.read_pet_tags`, DICOM keywords), so the SUV code
(:mod:`clinicalai.pet.suv`) has one input path whatever the file format.

BIDS field -> DICOM keyword:

- ``Units`` (``Bq/mL``, ``SUV`` / ``g/mL``) -> ``Units`` (``BQML``, ``GML``);
- ``BodyWeight`` (kg, or ``BodyWeightUnits`` ``g`` / ``lb``) -> ``PatientWeight`` (kg);
- ``InjectedRadioactivity`` x ``InjectedRadioactivityUnits`` (Bq, kBq, MBq, GBq, uCi, mCi)
  -> ``RadionuclideTotalDose`` (Bq);
- ``TracerRadionuclide`` (``F18``, ``C11``, ``Ga68``...) -> ``RadionuclideHalfLife`` (s);
- ``TimeZero`` (hh:mm:ss) + ``InjectionStart`` (s) -> ``RadiopharmaceuticalStartDateTime``;
- ``ImageDecayCorrected`` true -> ``DecayCorrection`` ``START`` with the reference
  ``TimeZero`` + ``ImageDecayCorrectionTime`` (default ``ScanStart``) in ``SeriesDate`` /
  ``SeriesTime`` (``ADMIN`` when that is the injection); false -> ``NONE`` with the scan
  start ``TimeZero`` + ``ScanStart`` in ``AcquisitionDate`` / ``AcquisitionTime``;
- ``AttenuationCorrection`` (any method but "none") -> ``ATTN`` in ``CorrectedImage``, and
  ``DECY`` when decay-corrected.

Dates come from ``ScanDate`` (deprecated in BIDS, still written by converters), else
2000-01-01: only differences of times enter SUV. Fields that are absent or cannot be read are
left out (with a sentence in the returned warnings); the SUV code then names what is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import InputError
from .formats import NIFTI_SUFFIXES

#: a sidecar is a few kB; anything much larger is not one (and is not read into memory)
MAX_SIDECAR_BYTES = 1 << 20
#: the tags' ``TagSource`` for values read from a sidecar (the SUV code names BIDS fields then)
BIDS_SOURCE = "BIDS sidecar"
#: half-lives (s) of the PET radionuclides BIDS names in ``TracerRadionuclide`` (NIST / DDEP)
HALF_LIFE_S = {
    "F18": 6586.2, "C11": 1221.8, "O15": 122.24, "N13": 597.9, "GA68": 4062.6, "CU64": 45721.1,
    "ZR89": 282276.0, "RB82": 76.38, "I124": 360806.4,
}
#: BIDS activity units -> Bq
ACTIVITY_UNITS_BQ = {"BQ": 1.0, "KBQ": 1e3, "MBQ": 1e6, "GBQ": 1e9, "UCI": 3.7e4, "\u00b5CI": 3.7e4, "MCI": 3.7e7}
#: BIDS body-weight units -> kg
WEIGHT_UNITS_KG = {"KG": 1.0, "G": 1e-3, "LB": 0.45359237, "LBS": 0.45359237}
#: image units -> the DICOM Units code
IMAGE_UNITS = {"BQ/ML": "BQML", "BQML": "BQML", "SUV": "GML", "G/ML": "GML", "GML": "GML"}
#: which BIDS field a missing tag comes from (for error messages)
BIDS_FIELD_OF_TAG = {
    "Units": "Units",
    "PatientWeight": "BodyWeight",
    "RadionuclideTotalDose": "InjectedRadioactivity (+ InjectedRadioactivityUnits)",
    "RadionuclideHalfLife": "TracerRadionuclide",
    "RadiopharmaceuticalStartTime": "TimeZero + InjectionStart",
    "RadiopharmaceuticalStartDateTime": "TimeZero + InjectionStart",
    "DecayCorrection": "ImageDecayCorrected",
    "CorrectedImage": "AttenuationCorrection",
    "SeriesDate": "TimeZero + ImageDecayCorrectionTime",
    "SeriesTime": "TimeZero + ImageDecayCorrectionTime",
    "AcquisitionDate": "TimeZero + ScanStart",
    "AcquisitionTime": "TimeZero + ScanStart",
}


def bids_pet_sidecar(image: "str | os.PathLike[str]") -> Optional[Path]:
    """The BIDS-PET sidecar of a NIfTI ``image``: ``<stem>.json`` where the stem ends in
    ``_pet`` (``sub-01_pet.nii.gz`` -> ``sub-01_pet.json``); ``None`` when there is none."""
    p = Path(image)
    name = p.name
    suffix = next((s for s in NIFTI_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        return None
    stem = name[: -len(suffix)]
    if not stem.lower().endswith("_pet"):
        return None
    sidecar = p.with_name(stem + ".json")
    return sidecar if sidecar.is_file() else None


def load_bids_pet_sidecar(path: "str | os.PathLike[str]") -> Dict[str, Any]:
    """The sidecar's fields as they are (a JSON object of at most ``MAX_SIDECAR_BYTES``).

    Raises:
        InputError: too large, unreadable, not JSON, not an object.
    """
    p = Path(path)
    try:
        if p.stat().st_size > MAX_SIDECAR_BYTES:
            raise InputError(f"{p.name}: {p.stat().st_size} bytes is too large for a BIDS-PET sidecar")
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p.name}: the BIDS-PET sidecar cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p.name}: a BIDS-PET sidecar is a JSON object, this is a {type(data).__name__}")
    return data


def read_bids_pet_sidecar(path: "str | os.PathLike[str]") -> Tuple[Dict[str, Any], List[str]]:
    """``(tags, warnings)``: the sidecar's PET tags by DICOM keyword and sentences about
    fields that could not be used.

    Raises:
        InputError: the file is not a JSON object (too large, unreadable, not JSON).
    """
    p = Path(path)
    tags, warnings = bids_pet_tags(load_bids_pet_sidecar(p))
    tags["TagSource"] = f"{BIDS_SOURCE} {p.name}"
    return tags, [f"{p.name}: {w}" for w in warnings]


def bids_pet_tags(sidecar: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """The PET tags (DICOM keywords) of a BIDS-PET sidecar's fields (module docstring)."""
    tags: Dict[str, Any] = {}
    warnings: List[str] = []
    units = sidecar.get("Units")
    if isinstance(units, str) and units.strip():
        code = IMAGE_UNITS.get(units.strip().upper())
        if code is None:
            warnings.append(f"Units {units!r} cannot be used for SUV (Bq/mL or SUV)")
        tags["Units"] = code or units.strip()
    weight = _number(sidecar, "BodyWeight", warnings)
    if weight is not None:
        unit = str(sidecar.get("BodyWeightUnits") or "kg").strip().upper()
        if unit in WEIGHT_UNITS_KG:
            tags["PatientWeight"] = weight * WEIGHT_UNITS_KG[unit]
        else:
            warnings.append(f"BodyWeightUnits {sidecar.get('BodyWeightUnits')!r} is not kg, g or lb")
    dose = _number(sidecar, "InjectedRadioactivity", warnings)
    if dose is not None:
        unit = str(sidecar.get("InjectedRadioactivityUnits") or "").strip().upper().replace("MICRO", "U")
        if unit in ACTIVITY_UNITS_BQ:
            tags["RadionuclideTotalDose"] = dose * ACTIVITY_UNITS_BQ[unit]
        else:
            warnings.append(f"InjectedRadioactivityUnits {sidecar.get('InjectedRadioactivityUnits')!r} "
                            "is not one of Bq, kBq, MBq, GBq, uCi, mCi")
    nuclide = sidecar.get("TracerRadionuclide")
    if isinstance(nuclide, str) and nuclide.strip():
        key = _nuclide_key(nuclide)
        if key in HALF_LIFE_S:
            tags["RadionuclideHalfLife"] = HALF_LIFE_S[key]
        else:
            warnings.append(f"TracerRadionuclide {nuclide!r}: half-life not known ({', '.join(sorted(HALF_LIFE_S))})")
    if isinstance(sidecar.get("TracerName"), str):
        tags["Radiopharmaceutical"] = sidecar["TracerName"]
    if isinstance(sidecar.get("Manufacturer"), str):
        tags["Manufacturer"] = sidecar["Manufacturer"]
    tags.update(_times(sidecar, warnings))
    corrected = _corrections(sidecar)
    if corrected is not None:
        tags["CorrectedImage"] = corrected
    return tags, warnings


def _number(sidecar: Mapping[str, Any], key: str, warnings: List[str]) -> Optional[float]:
    if key not in sidecar or sidecar[key] in (None, ""):
        return None
    value = sidecar[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        warnings.append(f"{key} is not a number ({value!r})")
        return None
    return float(value)


def _nuclide_key(name: str) -> str:
    """``"F18"``, ``"18F"``, ``"[18F]"``, ``"F-18"``, ``"^18^F"`` -> ``"F18"``."""
    s = "".join(c for c in name.upper() if c.isalnum())
    letters = "".join(c for c in s if c.isalpha())
    digits = "".join(c for c in s if c.isdigit())
    return letters + digits


def _time_of_day(value: Any) -> Optional[dt.timedelta]:
    """BIDS ``hh:mm:ss[.ffffff]`` -> time since midnight; ``None`` when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        t = dt.time.fromisoformat(value.strip())
    except ValueError:
        return None
    return dt.timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _times(sidecar: Mapping[str, Any], warnings: List[str]) -> Dict[str, Any]:
    """Injection and decay-reference times (DICOM DA / TM / DT) from TimeZero + offsets (s)."""
    out: Dict[str, Any] = {}
    zero = _time_of_day(sidecar.get("TimeZero"))
    if zero is None:
        if "TimeZero" in sidecar:
            warnings.append(f"TimeZero {sidecar['TimeZero']!r} is not a time of day hh:mm:ss")
        return out
    day = dt.datetime(2000, 1, 1)
    if isinstance(sidecar.get("ScanDate"), str):
        try:
            day = dt.datetime.fromisoformat(sidecar["ScanDate"].strip()[:10])
        except ValueError:
            warnings.append(f"ScanDate {sidecar['ScanDate']!r} is not a date YYYY-MM-DD")
    zero_dt = day + zero

    def at(key: str) -> Optional[dt.datetime]:
        seconds = _number(sidecar, key, warnings)
        return None if seconds is None else zero_dt + dt.timedelta(seconds=seconds)

    injection, scan = at("InjectionStart"), at("ScanStart")
    if injection is not None:
        out["RadiopharmaceuticalStartDateTime"] = injection.strftime("%Y%m%d%H%M%S.%f")
        out["RadiopharmaceuticalStartTime"] = injection.strftime("%H%M%S.%f")
    decayed = sidecar.get("ImageDecayCorrected")
    if decayed is True:
        reference = at("ImageDecayCorrectionTime") if "ImageDecayCorrectionTime" in sidecar else scan
        if reference is not None and injection is not None and reference == injection:
            out["DecayCorrection"] = "ADMIN"
        else:
            out["DecayCorrection"] = "START"
        if reference is not None:
            # START's reference is SeriesDate/SeriesTime; no AcquisitionTime is set, so the
            # "series re-processed after the scan" rule cannot move it
            out["SeriesDate"], out["SeriesTime"] = reference.strftime("%Y%m%d"), reference.strftime("%H%M%S.%f")
    elif decayed is False:
        out["DecayCorrection"] = "NONE"
        if scan is not None:
            out["AcquisitionDate"], out["AcquisitionTime"] = scan.strftime("%Y%m%d"), scan.strftime("%H%M%S.%f")
            out["SeriesDate"], out["SeriesTime"] = out["AcquisitionDate"], out["AcquisitionTime"]
    elif decayed is not None:
        warnings.append(f"ImageDecayCorrected is not true or false ({decayed!r})")
    return out


def _corrections(sidecar: Mapping[str, Any]) -> Optional[List[str]]:
    attenuation = sidecar.get("AttenuationCorrection")
    if attenuation is None:
        return None
    done = isinstance(attenuation, str) and attenuation.strip().lower() not in ("", "none", "no", "n/a", "false")
    corrected = ["ATTN"] if done else []
    if sidecar.get("ImageDecayCorrected") is True:
        corrected.append("DECY")
    return corrected

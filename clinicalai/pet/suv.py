"""SUV body weight from the PET tags (DICOM keywords, as ``Volume.metadata["pet"]`` holds them).

``SUVbw = C * W / D_ref`` with ``C`` the voxel value in Bq/mL, ``W`` the body weight in grams
and ``D_ref`` the injected dose in Bq decayed to the time the voxel values refer to
(DecayCorrection): the rules follow the QIBA vendor-neutral SUV pseudo-code.

- ``Units`` ``BQML``: needs PatientWeight, RadionuclideTotalDose, DecayCorrection and, unless
  DecayCorrection is ADMIN, RadionuclideHalfLife and the injection time
  (RadiopharmaceuticalStartDateTime, or RadiopharmaceuticalStartTime on the series date):
  ``START`` -> dose decayed to the series start (SeriesDate/SeriesTime; AcquisitionDate/Time
  when the series time is later than the acquisition time, as after re-processing);
  ``ADMIN`` -> values already refer to the injection, no decay of the dose;
  ``NONE``  -> values are not decay-corrected: dose decayed to the acquisition time.
  CorrectedImage must be present and list ATTN (and DECY unless DecayCorrection is NONE).
- ``GML``: already SUV body weight (g/mL); factor 1.
- ``CNTS``: Philips private SUV scale factor (7053,1000), applied to the rescaled values.
- ``SUV``: stated by the user for a NIfTI / NRRD; factor 1.

A NIfTI / NRRD has no units: the caller states them (``units="suv"`` or ``"bqml"`` with weight,
dose and times from :func:`pet_tags_from_options`). Any missing piece is an :class:`InputError`
naming the tag; nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..errors import InputError
from ..phantoms.pet import F18_HALF_LIFE_S, pet_tags
from ..volume import Volume

UNITS = ("suv", "bqml")


@dataclass(frozen=True)
class SuvConversion:
    """The factor turning stored values (after Rescale Slope) into SUV body weight.

    Attributes:
        factor: SUV per unit of the image values (g/mL per Bq/mL for BQML).
        units: the units the image was in (``BQML``, ``GML``, ``CNTS``, ``SUV``).
        details: weight, dose, elapsed time and decay factor used (for the report).
    """

    factor: float
    units: str
    details: Dict[str, Any] = field(default_factory=dict)


def _need(tags: Mapping[str, Any], key: str, why: str) -> Any:
    value = tags.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"cannot compute SUV: the PET has no {key} tag ({why})")
    return value


def _positive(tags: Mapping[str, Any], key: str, why: str) -> float:
    raw = _need(tags, key, why)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"cannot compute SUV: {key} is not a number ({raw!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"cannot compute SUV: {key} must be positive, it is {raw!r}")
    return value


def parse_dicom_datetime(date: Any, time: Any, what: str) -> dt.datetime:
    """DICOM DA (YYYYMMDD) + TM (HHMMSS[.ffffff], or HH, HHMM) -> datetime."""
    d, t = str(date).strip(), str(time).strip()
    try:
        day = dt.datetime.strptime(d[:8], "%Y%m%d")
        hh, mm, ss = int(t[0:2]), int(t[2:4] or 0), t[4:] or "0"
        seconds = float(ss.replace(":", "")) if ss else 0.0
        return day + dt.timedelta(hours=hh, minutes=mm, seconds=seconds)
    except (ValueError, IndexError):
        raise InputError(f"cannot compute SUV: {what} is not a valid DICOM date/time ({d!r} {t!r})") from None


def parse_dicom_dt(value: Any, what: str) -> dt.datetime:
    """DICOM DT (YYYYMMDDHHMMSS[.ffffff][&ZZXX]) -> datetime (time-zone suffix ignored)."""
    s = str(value).strip()
    for sign in ("+", "-"):
        if sign in s[8:]:
            s = s[: 8 + s[8:].index(sign)]
    return parse_dicom_datetime(s[:8], s[8:] or "00", what)


def injection_datetime(tags: Mapping[str, Any]) -> dt.datetime:
    """Injection time: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on
    the series date (an injection before midnight then shows up as "after the scan": an error)."""
    if tags.get("RadiopharmaceuticalStartDateTime"):
        return parse_dicom_dt(tags["RadiopharmaceuticalStartDateTime"], "RadiopharmaceuticalStartDateTime")
    t = _need(tags, "RadiopharmaceuticalStartTime", "the injection time; RadiopharmaceuticalStartDateTime is absent too")
    date = _need(tags, "SeriesDate", "the injection date when only RadiopharmaceuticalStartTime is given")
    return parse_dicom_datetime(date, t, "RadiopharmaceuticalStartTime")


def _decay_reference(tags: Mapping[str, Any], correction: str) -> tuple[dt.datetime, str]:
    if correction == "START":
        series = parse_dicom_datetime(
            _need(tags, "SeriesDate", "the decay-correction reference (DecayCorrection START)"),
            _need(tags, "SeriesTime", "the decay-correction reference (DecayCorrection START)"),
            "SeriesDate/SeriesTime",
        )
        if tags.get("AcquisitionDate") and tags.get("AcquisitionTime"):
            acq = parse_dicom_datetime(tags["AcquisitionDate"], tags["AcquisitionTime"], "AcquisitionDate/Time")
            if series > acq:  # series re-processed after the scan: the acquisition start is the reference
                return acq, "AcquisitionDate/AcquisitionTime (series time is after acquisition)"
        return series, "SeriesDate/SeriesTime"
    # NONE: the values are the activity during the acquisition
    acq = parse_dicom_datetime(
        _need(tags, "AcquisitionDate", "the acquisition time (DecayCorrection NONE)"),
        _need(tags, "AcquisitionTime", "the acquisition time (DecayCorrection NONE)"),
        "AcquisitionDate/AcquisitionTime",
    )
    return acq, "AcquisitionDate/AcquisitionTime"


def _corrections(tags: Mapping[str, Any]) -> List[str]:
    raw = _need(tags, "CorrectedImage", "it says whether the image is attenuation- and decay-corrected")
    items = raw.split("\\") if isinstance(raw, str) else list(raw)
    return [str(v).strip().upper() for v in items]


def suv_conversion(tags: Mapping[str, Any], units: Optional[str] = None) -> SuvConversion:
    """The SUVbw factor for an image with PET ``tags`` (DICOM keywords).

    Args:
        tags: ``Volume.metadata["pet"]`` (DICOM) or :func:`pet_tags_from_options` (NIfTI).
        units: units stated by the user (``suv`` / ``bqml``); when the tags have ``Units``
            too, they must agree.

    Raises:
        InputError: unknown units, a missing or invalid tag (named), inconsistent times.
    """
    tag_units = str(tags.get("Units") or "").strip().upper() or None
    user_units = units.strip().upper() if units else None
    if user_units is not None and user_units not in ("SUV", "BQML", "GML", "CNTS"):
        raise InputError(f"unknown PET units {units!r}; use one of {', '.join(UNITS)}")
    if user_units and tag_units and user_units != tag_units and {user_units, tag_units} != {"SUV", "GML"}:
        raise InputError(f"--units {units} contradicts the image's Units tag ({tag_units})")
    u = tag_units or user_units
    if u is None:
        raise InputError(
            "the PET image does not say its units (a NIfTI / NRRD has none): state them with --units suv or --units bqml"
        )
    if u in ("SUV", "GML"):
        return SuvConversion(1.0, u, {"note": "values are already SUV body weight"})
    if u == "CNTS":
        scale = _positive(tags, "PhilipsSUVScaleFactor", "Philips private tag (7053,1000), the SUV scale of CNTS images")
        return SuvConversion(scale, u, {"philips_suv_scale": scale})
    if u != "BQML":
        raise InputError(f"cannot compute SUV from PET units {u!r}; supported: BQML, GML, CNTS (Philips)")

    weight_kg = _positive(tags, "PatientWeight", "the body weight in kg")
    dose = _positive(tags, "RadionuclideTotalDose", "the injected dose in Bq")
    correction = str(_need(tags, "DecayCorrection", "the time the values are decay-corrected to")).strip().upper()
    if correction not in ("START", "ADMIN", "NONE"):
        raise InputError(f"cannot compute SUV: DecayCorrection {correction!r} is not supported (START, ADMIN, NONE)")
    corrected = _corrections(tags)
    if "ATTN" not in corrected:
        raise InputError("cannot compute SUV: CorrectedImage lacks ATTN; the image is not attenuation-corrected")
    if correction != "NONE" and "DECY" not in corrected:
        raise InputError(f"cannot compute SUV: DecayCorrection is {correction} but CorrectedImage lacks DECY")
    details: Dict[str, Any] = {"weight_kg": weight_kg, "injected_dose_bq": dose, "decay_correction": correction}
    if correction == "ADMIN":
        # values already decay-corrected to the injection: no decay of the dose, so neither the
        # half-life nor the injection time is needed (QIBA)
        decay = 1.0
        details["reference"] = "injection (ADMIN)"
    else:
        half_life = _positive(tags, "RadionuclideHalfLife", "the half-life in s (F-18: 6586.2)")
        details["half_life_s"] = half_life
        injection = injection_datetime(tags)
        reference, source = _decay_reference(tags, correction)
        elapsed = (reference - injection).total_seconds()
        if elapsed < 0:
            raise InputError(
                f"cannot compute SUV: the injection ({injection.isoformat()}) is after the scan reference "
                f"{source} ({reference.isoformat()})"
            )
        decay = 2.0 ** (-elapsed / half_life)
        details.update({"injection": injection.isoformat(), "reference": f"{reference.isoformat()} ({source})",
                        "elapsed_s": elapsed})
    details["decay_factor"] = decay
    factor = weight_kg * 1000.0 / (dose * decay)
    return SuvConversion(factor, u, details)


def to_suv(volume: Volume, units: Optional[str] = None, tags: Optional[Mapping[str, Any]] = None) -> tuple[Volume, SuvConversion]:
    """``volume`` converted to SUV body weight (float32, ``units="SUV"``), and the conversion used.

    ``tags`` default to ``volume.metadata["pet"]``; ``units`` as in :func:`suv_conversion`.
    """
    tags = dict(volume.metadata.get("pet") or {}) if tags is None else dict(tags)
    if units is None and not tags.get("Units") and volume.units:
        units = volume.units
    conversion = suv_conversion(tags, units)
    arr = volume.array.astype(np.float32) * np.float32(conversion.factor)
    meta = {"suv_conversion": {"factor": conversion.factor, "from_units": conversion.units, **conversion.details}}
    out = volume.with_array(arr, units="SUV", modality=volume.modality or "PT")
    out.metadata.update(meta)
    return out, conversion


def pet_tags_from_options(
    weight_kg: Optional[float],
    dose_mbq: Optional[float],
    injection_time: Optional[str],
    scan_time: Optional[str],
    decay_correction: str = "START",
) -> Dict[str, Any]:
    """PET tags (DICOM keywords) for a Bq/mL NIfTI from command-line values.

    Args:
        weight_kg: body weight (kg).
        dose_mbq: injected dose (MBq).
        injection_time, scan_time: ISO 8601 (``2024-03-01T09:30:00``).
        decay_correction: what the values are decay-corrected to: ``START`` (the scan start,
            as every vendor's reconstructions and dcm2niix conversions are), ``ADMIN`` or ``NONE``.
    """
    missing = [name for name, v in (("--weight", weight_kg), ("--dose", dose_mbq), ("--injection-time", injection_time),
                                     ("--scan-time", scan_time)) if v in (None, "")]
    if missing:
        raise InputError(
            f"a PET in Bq/mL without DICOM tags needs {', '.join(missing)} to compute SUV "
            "(or give --units suv for an image already in SUV)"
        )

    def iso(value: str, name: str) -> dt.datetime:
        try:
            return dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise InputError(f"{name} must be an ISO date-time such as 2024-03-01T09:30:00, got {value!r}") from None

    inj, scan = iso(injection_time, "--injection-time"), iso(scan_time, "--scan-time")
    tags = pet_tags(float(weight_kg), float(dose_mbq) * 1e6, inj, scan, decay_correction=decay_correction.upper())
    tags["RadionuclideHalfLife"] = F18_HALF_LIFE_S
    tags.pop("Manufacturer", None)
    return tags

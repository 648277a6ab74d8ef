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

A NIfTI / NRRD has no units: a BIDS-PET sidecar beside it (``*_pet.json``, read into the same
tags by :mod:`clinicalai.volume.bids_pet`) says them, or the caller does (``units="suv"`` or
``"bqml"`` with weight, dose and times from :func:`pet_tags_from_options` or
:class:`UserDecayData`, which also fill in or override what a file says). Any missing piece is
an :class:`InputError` naming the tag (or the sidecar's field); nothing is guessed.

The GUIs show SUV only when it can be computed: :func:`uptake_conversion` falls back to the
image's own Bq/mL (factor 1, ``quantity="Bq/mL"``) when an input of SUVbw is missing; the
command line keeps refusing (:func:`suv_conversion`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..errors import InputError
from ..volume import Volume
from ..volume.bids_pet import BIDS_FIELD_OF_TAG, BIDS_SOURCE, HALF_LIFE_S

# the GUIs' MRML logic imports this module in a fresh Slicer (numpy only: no scipy, so no
# clinicalai.phantoms at import time)
F18_HALF_LIFE_S = HALF_LIFE_S["F18"]

UNITS = ("suv", "bqml")
#: the quantity of SUV body weight, as results label it
SUVBW = "SUVbw"
#: the quantity of an image left in its activity concentration
BQML = "Bq/mL"
#: how the GUIs label SUVbw values: the formula, with the decay of the dose to the scan
SUVBW_FORMULA = "SUVbw = C[Bq/mL] x weight[g] / (dose[Bq] x 2^(-(t_scan - t_inj) / T_half))"
#: the tags' ``TagSource`` when the user typed weight, dose or times
USER_SOURCE = "user"
#: plausible limits of what a user types (beyond them: a typo or the wrong unit)
MAX_WEIGHT_KG = 700.0
MAX_DOSE_MBQ = 100000.0


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
    #: what the converted values are: :data:`SUVBW`, or :data:`BQML` (SUV could not be computed)
    quantity: str = SUVBW

    @property
    def label(self) -> str:
        """How a GUI labels the values: the SUVbw formula, or Bq/mL and why not SUV."""
        if self.quantity == SUVBW:
            return SUVBW_FORMULA if self.units == "BQML" else f"{SUVBW} (the image's values, units {self.units})"
        return f"{BQML} (no SUV: {self.details.get('why_not_suv', 'its inputs are not known')})"

    @property
    def description(self) -> str:
        """:attr:`label` and, for SUVbw from Bq/mL, the values that went into it (one line)."""
        d = self.details
        if self.quantity != SUVBW or self.units != "BQML":
            return self.label
        parts = [f"weight {d['weight_kg']:g} kg", f"dose {d['injected_dose_bq'] / 1e6:.4g} MBq"]
        if "elapsed_s" in d:
            parts.append(f"scan {d['elapsed_s'] / 60:.1f} min after injection, T_half {d['half_life_s'] / 60:.1f} min")
        else:
            parts.append("values decay-corrected to the injection")
        return f"{self.label}: {', '.join(parts)}"


class MissingSuvInput(InputError):
    """An input of SUV (weight, dose, a time...) is absent, as opposed to present and wrong."""


def _need(tags: Mapping[str, Any], key: str, why: str) -> Any:
    value = tags.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        source = str(tags.get("TagSource") or "")
        if source.startswith(BIDS_SOURCE) and key in BIDS_FIELD_OF_TAG:
            raise MissingSuvInput(f"cannot compute SUV: the {source} has no {BIDS_FIELD_OF_TAG[key]} ({why})")
        raise MissingSuvInput(f"cannot compute SUV: the PET has no {key} tag ({why})")
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


def decay_reference(tags: Mapping[str, Any], correction: str) -> tuple[dt.datetime, str]:
    """``(time, which tags gave it)`` the values of an image with PET ``tags`` are decay-corrected
    to for START (the series time, QIBA's rule), or, for NONE, its acquisition start (the values
    are the activity during the acquisition). ADMIN's is the injection (:func:`injection_datetime`)."""
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
        reference, source = decay_reference(tags, correction)
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


def uptake_conversion(tags: Mapping[str, Any], units: Optional[str] = None) -> SuvConversion:
    """:func:`suv_conversion` when SUVbw can be computed; for a Bq/mL image whose weight, dose
    or times are missing, the image's own values instead (factor 1, ``quantity`` Bq/mL, the
    reason in ``details["why_not_suv"]``), so that nothing in Bq/mL is called SUV.

    Raises:
        InputError: the units are unknown or not convertible (as :func:`suv_conversion`), or a
            value that is there is wrong (a negative weight, the scan before the injection...).
    """
    try:
        return suv_conversion(tags, units)
    except MissingSuvInput as exc:
        if str(tags.get("Units") or units or "").strip().upper() != "BQML":
            raise
        return SuvConversion(1.0, "BQML", {"why_not_suv": str(exc).removeprefix("cannot compute SUV: ")}, quantity=BQML)


def to_suv(volume: Volume, units: Optional[str] = None, tags: Optional[Mapping[str, Any]] = None,
           bqml_fallback: bool = False) -> tuple[Volume, SuvConversion]:
    """``volume`` converted to SUV body weight (float32, ``units="SUV"``), and the conversion used.

    ``tags`` default to ``volume.metadata["pet"]``; ``units`` as in :func:`suv_conversion`.
    ``bqml_fallback``: a Bq/mL image without what SUV needs is returned in Bq/mL
    (:func:`uptake_conversion`; ``units="BQML"``, the conversion's ``quantity`` says it).
    """
    tags = dict(volume.metadata.get("pet") or {}) if tags is None else dict(tags)
    if units is None and not tags.get("Units") and volume.units:
        units = volume.units
    conversion = uptake_conversion(tags, units) if bqml_fallback else suv_conversion(tags, units)
    arr = volume.array.astype(np.float32) * np.float32(conversion.factor)
    meta = {"suv_conversion": {"factor": conversion.factor, "from_units": conversion.units,
                               "quantity": conversion.quantity, **conversion.details}}
    out = volume.with_array(arr, units="SUV" if conversion.quantity == SUVBW else "BQML", modality=volume.modality or "PT")
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

    from ..phantoms.pet import pet_tags  # the tag layout of a scan (scipy: imported on use)

    inj, scan = iso(injection_time, "--injection-time"), iso(scan_time, "--scan-time")
    tags = pet_tags(float(weight_kg), float(dose_mbq) * 1e6, inj, scan, decay_correction=decay_correction.upper())
    tags["RadionuclideHalfLife"] = F18_HALF_LIFE_S
    tags.pop("Manufacturer", None)
    return tags


# ---------------------------------------------------------------------------- what a user types
@dataclass(frozen=True)
class UserDecayData:
    """Body weight, injected dose and times typed by the user (a GUI's fields, the CLI's options).

    Every field is optional: given ones fill in, or override, what the file says (DICOM tags,
    BIDS sidecar). Build it with :meth:`parse`, which checks every value.

    Attributes:
        weight_kg: body weight (kg), > 0.
        injected_mbq: injected dose (MBq) at the injection time, > 0.
        injection_time, scan_time: ISO date-times (``2024-03-01T09:30:00``), or times of day
            (``09:30``, ``09:30:15``) on the date of the file's series (else one same day).
    """

    weight_kg: Optional[float] = None
    injected_mbq: Optional[float] = None
    injection_time: Optional[str] = None
    scan_time: Optional[str] = None

    @classmethod
    def parse(cls, weight_kg: Any = None, injected_mbq: Any = None, injection_time: Any = None,
              scan_time: Any = None) -> "UserDecayData":
        """Checked values from anything a page or a command line sends (``None`` / ``""`` = not given).

        Raises:
            InputError: one sentence for the first wrong value: not a number, not positive,
                implausibly large, not a time, or the scan before the injection.
        """
        data = cls(
            weight_kg=_user_number(weight_kg, "body weight (kg)", MAX_WEIGHT_KG),
            injected_mbq=_user_number(injected_mbq, "injected dose (MBq)", MAX_DOSE_MBQ),
            injection_time=_user_text(injection_time, "injection time"),
            scan_time=_user_text(scan_time, "scan time"),
        )
        day = dt.datetime(2000, 1, 1)
        inj = parse_user_time(data.injection_time, "injection time", day) if data.injection_time else None
        scan = parse_user_time(data.scan_time, "scan time", day) if data.scan_time else None
        if inj is not None and scan is not None and scan < inj:
            raise InputError(f"the scan time ({data.scan_time}) is before the injection time ({data.injection_time})")
        return data

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.weight_kg, self.injected_mbq, self.injection_time, self.scan_time))

    def apply_to(self, tags: Mapping[str, Any]) -> Dict[str, Any]:
        """``tags`` (a file's; may be empty) with these values filled in or overriding them.

        Times of day take the date of the file's series (else 2000-01-01). A Bq/mL image
        without a file's DecayCorrection / CorrectedImage is taken as decay-corrected to the
        scan start and attenuation-corrected, as every vendor reconstruction is.
        """
        out = dict(tags)
        if self.empty:
            return out
        day = _file_day(out)
        if self.weight_kg is not None:
            out["PatientWeight"] = self.weight_kg
        if self.injected_mbq is not None:
            out["RadionuclideTotalDose"] = self.injected_mbq * 1e6
        if self.injection_time:
            inj = parse_user_time(self.injection_time, "injection time", day)
            out["RadiopharmaceuticalStartDateTime"] = inj.strftime("%Y%m%d%H%M%S.%f")
            out["RadiopharmaceuticalStartTime"] = inj.strftime("%H%M%S.%f")
        if self.scan_time:
            scan = parse_user_time(self.scan_time, "scan time", day)
            for date_key, time_key in (("SeriesDate", "SeriesTime"), ("AcquisitionDate", "AcquisitionTime")):
                out[date_key], out[time_key] = scan.strftime("%Y%m%d"), scan.strftime("%H%M%S.%f")
        out.setdefault("DecayCorrection", "START")
        out.setdefault("CorrectedImage", ["ATTN", "DECY"])
        out.setdefault("RadionuclideHalfLife", F18_HALF_LIFE_S)  # FDOPA: fluorine-18
        sources = [str(tags.get("TagSource"))] if tags.get("TagSource") else []
        out["TagSource"] = " + ".join(sources + [USER_SOURCE])
        return out


def _user_number(value: Any, what: str, most: float) -> Optional[float]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"the {what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"the {what} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"the {what} must be positive, got {value!r}")
    if number > most:
        raise InputError(f"the {what} is {number:g}, more than {most:g}: check the value and its unit")
    return number


def _user_text(value: Any, what: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"the {what} must be a date-time such as 2024-03-01T09:30 or a time such as 09:30")
    return value.strip() or None


def _file_day(tags: Mapping[str, Any]) -> dt.datetime:
    for key in ("SeriesDate", "AcquisitionDate"):
        if tags.get(key):
            try:
                return dt.datetime.strptime(str(tags[key]).strip()[:8], "%Y%m%d")
            except ValueError:
                pass
    return dt.datetime(2000, 1, 1)


def parse_user_time(value: str, what: str, day: dt.datetime) -> dt.datetime:
    """``2024-03-01T09:30[:00]`` (or with a space) -> that date-time; ``09:30[:00]`` -> on ``day``.

    Raises:
        InputError: neither.
    """
    s = str(value).strip()
    try:
        if len(s) <= 15 and ":" in s and "-" not in s:
            t = dt.time.fromisoformat(s)
            return day.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=t.microsecond)
        return dt.datetime.fromisoformat(s).replace(tzinfo=None)
    except ValueError:
        raise InputError(f"the {what} must be a date-time such as 2024-03-01T09:30 or a time such as 09:30, "
                         f"got {value!r}") from None


def known_decay_data(tags: Mapping[str, Any]) -> Dict[str, str]:
    """What a file's PET ``tags`` say of the values a user could type, as text for a form
    (``weight_kg``, ``injected_mbq``, ``injection_time``, ``scan_time``); absent or unreadable
    ones are left out."""
    out: Dict[str, str] = {}
    for key, tag, scale in (("weight_kg", "PatientWeight", 1.0), ("injected_mbq", "RadionuclideTotalDose", 1e-6)):
        try:
            out[key] = f"{float(tags[tag]) * scale:g}"
        except (KeyError, TypeError, ValueError):
            pass
    try:
        out["injection_time"] = injection_datetime(tags).isoformat(sep=" ", timespec="seconds")
    except InputError:
        pass
    for date_key, time_key in (("SeriesDate", "SeriesTime"), ("AcquisitionDate", "AcquisitionTime")):
        if tags.get(date_key) and tags.get(time_key):
            try:
                out["scan_time"] = parse_dicom_datetime(tags[date_key], tags[time_key], time_key).isoformat(
                    sep=" ", timespec="seconds")
                break
            except InputError:
                pass
    return out

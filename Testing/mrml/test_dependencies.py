"""The Slicer modules' installer asks for what pyproject.toml requires (one fact, checked)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from clinicalai.mrml.dependencies import NOT_INSTALLED_IN_SLICER, PIP_PACKAGES

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_slicer_requirements_are_pyprojects():
    required = {_name(r): r.split(";")[0].strip() for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]}
    in_slicer = {_name(req): req for _, req in PIP_PACKAGES}
    # the same specifier as pyproject for everything the modules install ...
    assert {n: required.get(n) for n in in_slicer} == in_slicer
    # ... and every pyproject dependency either installed by the modules or left out with a reason
    left_out = set(NOT_INSTALLED_IN_SLICER)
    assert set(required) == set(in_slicer) | left_out, set(required) ^ (set(in_slicer) | left_out)
    assert all(len(why) > 10 for why in NOT_INSTALLED_IN_SLICER.values())

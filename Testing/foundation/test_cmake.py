"""The top-level CMakeLists.txt of the Slicer extension: metadata the extension index needs
and one add_subdirectory per module folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("SegCorrect", "PetRecurrence", "AttributionViewer")


@pytest.fixture(scope="module")
def cmake() -> str:
    text = (REPO / "CMakeLists.txt").read_text()
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # comments do not count


def _set_value(cmake: str, name: str) -> str:
    m = re.search(rf"^\s*set\(\s*{name}\s+(.+?)\)\s*$", cmake, re.MULTILINE)
    assert m, f"{name} is not set"
    return m.group(1).strip().strip('"')


def test_project_and_required_calls_in_order(cmake):
    order = [r"cmake_minimum_required\(VERSION", r"project\(ClinicalAI\)", r"find_package\(Slicer REQUIRED\)",
             r"include\(\$\{Slicer_USE_FILE\}\)", r"add_subdirectory\(",
             r"include\(\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\)", r"include\(\$\{Slicer_EXTENSION_CPACK\}\)"]
    positions = [re.search(p, cmake).start() if re.search(p, cmake) else -1 for p in order]
    assert -1 not in positions, dict(zip(order, positions))
    assert positions == sorted(positions)


@pytest.mark.parametrize("field", ["EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS",
                                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"])
def test_metadata_fields_are_filled(cmake, field):
    value = _set_value(cmake, field)
    assert value and "example.com" not in value
    if field.endswith(("URL", "URLS", "HOMEPAGE")):
        assert all(url.startswith("https://") for url in value.split())


def test_icon_url_points_at_the_icon_in_the_repository(cmake):
    url = _set_value(cmake, "EXTENSION_ICONURL")
    relative = url.split("/main/", 1)[1]
    icon = REPO / relative
    assert icon.is_file() and icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _repository_base(url: str) -> str:
    """``https://raw.githubusercontent.com/<owner>/<repo>/main/`` of a URL into the repository."""
    assert "/main/" in url, url
    return url.split("/main/", 1)[0] + "/main/"


def test_screenshot_urls_point_at_pngs_in_the_repository(cmake):
    """Every screenshot the extension index shows is a PNG of this repository (written by
    scripts/screenshots.py), under the same base URL as the icon, small enough to serve."""
    import struct

    urls = _set_value(cmake, "EXTENSION_SCREENSHOTURLS").split()
    assert len(urls) == len(set(urls)) >= len(MODULES), urls  # one per panel at least
    base = _repository_base(_set_value(cmake, "EXTENSION_ICONURL"))
    for url in urls:
        assert url.startswith(base), f"{url} is not under the icon's base URL {base}"
        shot = REPO / url[len(base):]
        assert shot.is_file(), f"{url}: {shot.relative_to(REPO)} is not in the repository (python scripts/screenshots.py)"
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{shot.name} is not a PNG"
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
        assert width >= 800 and height >= 500, f"{shot.name} is {width}x{height}"
        assert len(data) <= 400_000, f"{shot.name} is {len(data)} bytes"


def test_depends_on_pytorch(cmake):
    assert _set_value(cmake, "EXTENSION_DEPENDS").split() == ["PyTorch"]


@pytest.mark.parametrize("module", MODULES)
def test_each_module_folder_is_added(cmake, module):
    assert re.search(rf"^\s*add_subdirectory\({module}\)", cmake, re.MULTILINE)
    assert (REPO / module).is_dir()

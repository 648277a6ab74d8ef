"""Shared pytest fixtures. Area-specific fixtures live in Testing/<area>/conftest.py."""

import os

import pytest

# Tests run on 2 CPU cores: keep torch from oversubscribing them. Under pytest-xdist each of the
# two workers gets one core's worth of threads. The xdist controller imports this file before it
# starts its workers, and they inherit its environment: a worker must not take the controller's
# default of 2 for a choice of the user's (two workers with two OpenMP threads each on two cores
# made double-backprop steps 20-70 times slower; a user's own setting is still kept).
_DEFAULT_MARK = "CLINICALAI_TEST_DEFAULT_THREADS"
if "OMP_NUM_THREADS" not in os.environ or os.environ.get(_DEFAULT_MARK) == os.environ["OMP_NUM_THREADS"]:
    os.environ["OMP_NUM_THREADS"] = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
    os.environ[_DEFAULT_MARK] = os.environ["OMP_NUM_THREADS"]


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    yield


@pytest.fixture(scope="session")
def slicer_context():
    """A headless MRML scene from slicer-core with the application, colour, volumes,
    segmentations and subject-hierarchy logics (``clinicalai.mrml.headless``); one per session
    because building the logics is the slow part. Tests clear what they add (``ctx``
    in Testing/mrml/conftest.py)."""
    pytest.importorskip("slicer")
    from clinicalai.mrml.headless import create_headless_context

    return create_headless_context()


@pytest.fixture(scope="session")
def load_script():
    """``load_script("name")``: the module of ``scripts/name.py`` (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test``: two workers, ``--dist loadfile``) whole files are handed
    to whichever worker is free, in collection order. The browser and slow files go first, so
    the run does not end on one of them while the other worker idles; the order inside a file is
    kept (some browser tests build on the page their predecessors left)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    from collections import Counter

    browser = Counter(item.path for item in items if item.get_closest_marker("browser"))
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: (-browser[item.path], -slow[item.path]))  # stable sort

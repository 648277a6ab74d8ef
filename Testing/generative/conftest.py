"""Fixtures of the generative tests: tiny grids (6 mm, 16^3) so models learn in seconds."""

from pathlib import Path

import numpy as np
import pytest

from clinicalai.generative.data import GridSpec, brain_training_set

#: 16^3 voxels of 6 mm hold the whole phantom brain; lesions of 10-14 mm radius are 2-3 voxels
SMALL = GridSpec((6.0, 6.0, 6.0), (16, 16, 16))
BIG_LESIONS = {"lesion_radius_mm": (10.0, 14.0)}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: 16^3 networks gain nothing from two, and GAN training is then
    reproducible whatever the machine's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_spec() -> GridSpec:
    return SMALL


@pytest.fixture(scope="session")
def brain_sets():
    """Training (healthy, pathological) and held-out (mixed, with labels) sets on SMALL."""
    healthy, _ = brain_training_set(16, SMALL, seed=1, pathological=False)
    patho, _ = brain_training_set(8, SMALL, seed=2, pathological=True, **BIG_LESIONS)
    test, cases = brain_training_set(12, SMALL, seed=4, pathological=None, **BIG_LESIONS)
    y = np.array([c.pathological for c in cases], int)
    return {"healthy": healthy, "pathological": patho, "test": test, "y": y, "cases": cases}


@pytest.fixture(scope="session")
def ae_package(tmp_path_factory, brain_sets) -> Path:
    """A small AE anomaly model saved as a package (weights + card)."""
    import torch

    from clinicalai.generative.train import TrainConfig, train_generative
    from clinicalai.models import save_model

    torch.manual_seed(0)
    cfg = TrainConfig(kind="ae", epochs=15, batch_size=4, lr=1e-3, channels=(8, 16), strides=(2, 2))
    res = train_generative(cfg, SMALL, brain_sets["healthy"])
    path = tmp_path_factory.mktemp("models") / "tiny-ae.pt"
    card = {"name": "tiny-ae", "task": "anomaly-detection", "format": "state_dict",
            "architecture": {"name": res.architecture, "kwargs": res.kwargs}, "input": SMALL.card_input(),
            "generative_kind": "ae", "synthetic_demo": True, **SMALL.card_extra()}
    save_model(res.module, card, path)
    return path

"""Fixtures of the MRML tests: the session's headless scene, emptied of what each test adds.
Stand-ins for Slicer's Qt-only module API live in slicer_stand_ins.py (on sys.path here)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from clinicalai.volume import Volume

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def ctx(slicer_context):
    """The session's :class:`MRMLContext`; every node a test adds is removed after it."""
    scene = slicer_context.scene
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    yield slicer_context
    added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    for node in reversed([n for n in added if n.GetID() not in before]):
        if scene.IsNodePresent(node):
            scene.RemoveNode(node)


def _node_ids(scene):
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


@pytest.fixture
def node_ids():
    """``node_ids(scene)``: the IDs of every node in the scene, in order."""
    return _node_ids


OBLIQUE = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()


@pytest.fixture
def oblique_volume():
    """An oblique (non-identity direction), anisotropic float volume with a non-zero origin."""
    rng = np.random.default_rng(0)
    return Volume(
        rng.normal(size=(7, 9, 11)).astype(np.float32),
        spacing=(0.7, 1.3, 3.1),
        origin=(10.0, -20.0, 33.0),
        direction=OBLIQUE,
        modality="MR",
    )


@pytest.fixture
def oblique_labels(oblique_volume):
    lab = np.zeros(oblique_volume.shape, np.uint8)
    lab[2:5, 3:7, 4:9] = 1
    lab[3:6, 5:8, 6:10] = 2  # overlaps label 1: label 2 wins there
    lab[0, 0, 0] = 3
    return oblique_volume.with_array(lab, modality="SEG", units="label")


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    """A small untrained MONAI classifier saved as a model package (card + state dict)."""
    import torch
    from monai.networks.nets import Classifier

    from clinicalai.models import save_model

    torch.manual_seed(0)
    kwargs = {"in_shape": [1, 12, 16, 16], "classes": 2, "channels": [4, 8], "strides": [2, 2]}
    net = Classifier(**kwargs)
    card = {
        "name": "tiny-brain-classifier", "task": "classification", "format": "state_dict",
        "architecture": {"name": "monai.networks.nets.Classifier", "kwargs": kwargs},
        "input": {"channels": 1, "spacing_mm": [4, 4, 4], "size": [16, 16, 12], "normalization": {"kind": "minmax"}},
        "classes": ["healthy", "lesion"], "synthetic_demo": True, "intended_use": "tests",
    }
    return str(save_model(net, card, tmp_path_factory.mktemp("models") / "tiny.pt"))


@pytest.fixture(scope="session")
def anomaly_model(tmp_path_factory):
    """A small untrained MONAI AutoEncoder saved as an anomaly-detection package (the
    generative engine's card conventions; no training: the MRML logic only needs a valid map)."""
    import torch
    from monai.networks.nets import AutoEncoder

    from clinicalai.generative.data import GridSpec
    from clinicalai.models import save_model

    torch.manual_seed(0)
    spec = GridSpec((6.0, 6.0, 6.0), (16, 16, 16))
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [8, 16], "strides": [2, 2], "num_res_units": 0}
    card = {"name": "tiny-ae", "task": "anomaly-detection", "format": "state_dict",
            "architecture": {"name": "monai.networks.nets.AutoEncoder", "kwargs": kwargs}, "input": spec.card_input(),
            "generative_kind": "ae", "synthetic_demo": True, **spec.card_extra()}
    return str(save_model(AutoEncoder(**kwargs), card, tmp_path_factory.mktemp("models") / "tiny-ae.pt"))


@pytest.fixture(scope="session")
def pet_models(tmp_path_factory):
    """Two small untrained fold models (MONAI Classifier) with PetRecurrence's card
    conventions: 3D, one channel, classes (treatment-related change, recurrence)."""
    import torch
    from monai.networks.nets import Classifier

    from clinicalai.models import save_model

    folder = tmp_path_factory.mktemp("pet-models")
    kwargs = {"in_shape": [1, 16, 24, 24], "classes": 2, "channels": [4, 8], "strides": [2, 2]}
    paths = []
    for fold in range(2):
        torch.manual_seed(fold)
        card = {
            "name": f"pet-tiny-fold{fold}", "task": "classification", "format": "state_dict",
            "architecture": {"name": "monai.networks.nets.Classifier", "kwargs": kwargs},
            "input": {"channels": 1, "spacing_mm": [6, 6, 6], "size": [24, 24, 16], "normalization": {"kind": "minmax"}},
            "classes": ["treatment-related change", "recurrence"], "synthetic_demo": True,
        }
        paths.append(str(save_model(Classifier(**kwargs), card, folder / f"pet-tiny-fold{fold}.pt")))
    return paths


@pytest.fixture(scope="session")
def corrector_model(tmp_path_factory):
    """A small untrained NVAE mask corrector saved with SegCorrect's corrector card (RV, MYO, LV)."""
    import torch

    from clinicalai.models import save_model
    from clinicalai.networks.nvae import NVAE
    from clinicalai.phantoms.cardiac import cardiac_segments
    from clinicalai.segcorrect.corrector_training import CorrectorConfig, corrector_card

    torch.manual_seed(0)
    config = CorrectorConfig(stem_channels=4, latent_channels=4, groups_per_scale=(1,), channel_reduction=8)
    card = corrector_card(config, cardiac_segments(), name="tiny-nvae")
    return str(save_model(NVAE(**config.network_kwargs()), card, tmp_path_factory.mktemp("models") / "tiny-nvae.pt"))

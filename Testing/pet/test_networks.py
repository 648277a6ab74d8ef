"""The study's networks: parameter counts (one output logit) and shapes."""

import pytest
import torch

from clinicalai.networks import architectures, build_network, count_parameters
from clinicalai.networks.pet_cnns import PET_ARCHITECTURES, PET_CAM_LAYERS

STUDY = {"cnn3d": 5_414_081, "vgg11": 27_658_497, "resnet10": 14_356_929}


@pytest.mark.parametrize("arch", sorted(STUDY))
def test_parameter_count_equals_the_study(arch):
    name, kwargs, ref = PET_ARCHITECTURES[arch]
    with torch.device("meta"):  # counts without allocating or initialising weights
        net = build_network(name, kwargs)
    assert count_parameters(net) == STUDY[arch] == ref


def test_squeezenet_count():
    # the study's 1,861,186 is this layout with a 2-channel classifier conv; one logit has 513 fewer
    assert count_parameters(build_network("clinicalai.networks.SqueezeNet3D", {"num_classes": 2})) == 1_861_186
    assert count_parameters(build_network("clinicalai.networks.SqueezeNet3D", {"num_classes": 1})) == 1_861_186 - 513


def test_senet_count_derived():
    # no count in the study; SEResNetBottleneck, layers (1,1,1,1), groups 1, reduction 4, one logit
    name, kwargs, _ = PET_ARCHITECTURES["senet"]
    assert count_parameters(build_network(name, kwargs)) == 17_087_489


def test_registered_with_reference_counts():
    reg = architectures()
    for cls, ref in [("CNN3D", 5_414_081), ("VGG11_3D", 27_658_497), ("SqueezeNet3D", 1_861_186)]:
        arch = reg[f"clinicalai.networks.{cls}"]
        assert arch.reference_parameters == ref
        assert count_parameters(arch.build(**arch.reference_kwargs)) == ref


@pytest.mark.parametrize("arch", ["cnn3d", "squeezenet"])
def test_one_logit_and_cam_layer_exists(arch):
    name, kwargs, _ = PET_ARCHITECTURES[arch]
    net = build_network(name, kwargs).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 32, 32, 21))
    assert out.shape == (2, 1)
    assert PET_CAM_LAYERS[arch] in dict(net.named_modules())


def test_models_architectures_lists_the_study_counts(capsys):
    import json

    from clinicalai.cli import main

    assert main(["models", "architectures", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    found = {(r["name"], (r["kwargs"] or {}).get("num_classes")): r for r in rows}
    expected = {  # (card name, outputs) -> (ours, the study's)
        ("clinicalai.networks.CNN3D", 1): (5_414_081, 5_414_081),
        ("clinicalai.networks.VGG11_3D", 1): (27_658_497, 27_658_497),
        ("clinicalai.networks.SqueezeNet3D", 2): (1_861_186, 1_861_186),
        ("monai.networks.nets.resnet10", 1): (14_356_929, 14_356_929),
        ("monai.networks.nets.SENet", 1): (17_087_489, None),  # the study gives no count
    }
    for key, (ours, study) in expected.items():
        assert key in found, key
        assert found[key]["parameters"] == ours and found[key]["reference_parameters"] == study, found[key]
    assert found[("monai.networks.nets.SENet", 1)]["kwargs"]["layers"] == [1, 1, 1, 1]


def test_cnn3d_max_pool_head_rests_on_the_strongest_local_response():
    """``pool="max"`` (the bundled demo's head): same parameters as the mean-pool head; the output
    changes with one hot voxel only where that voxel beats the feature maxima, and a bad name is refused."""
    kw = {"channels": [4, 8], "pool_grid": [1, 1, 1], "hidden": 8, "norm": "batch", "dropout": 0.0}
    torch.manual_seed(0)
    avg = build_network("clinicalai.networks.CNN3D", kw).eval()
    mx = build_network("clinicalai.networks.CNN3D", {**kw, "pool": "max"}).eval()
    assert count_parameters(avg) == count_parameters(mx)
    mx.load_state_dict(avg.state_dict())
    x = torch.zeros(1, 1, 16, 16, 8)
    x[0, 0, 4, 4, 4] = 1.0
    with torch.no_grad():
        feats = mx.features(x)
        assert torch.allclose(mx.pool(feats).flatten(), feats.amax(dim=(2, 3, 4)).flatten())
        assert torch.allclose(avg.pool(feats).flatten(), feats.mean(dim=(2, 3, 4)).flatten())
        assert mx(x).shape == (1, 1)
    with pytest.raises(ValueError, match="pool must be avg or max"):
        build_network("clinicalai.networks.CNN3D", {**kw, "pool": "median"})


def test_training_card_cam_layer_exists_for_a_two_block_cnn3d():
    """A CNN3D with fewer blocks than the study's has no ``features.6``: the card names its last
    conv block instead (the engine refuses a card whose cam_layer is not in the model)."""
    from clinicalai.pet.train import _cam_layer
    from clinicalai.pet.train_demo import DEMO_ARCH_KWARGS

    net = build_network("clinicalai.networks.CNN3D", DEMO_ARCH_KWARGS)
    assert _cam_layer(net, PET_CAM_LAYERS["cnn3d"]) == "features.2"
    study = build_network("clinicalai.networks.CNN3D", {"channels": [4, 4, 4, 4]})
    assert _cam_layer(study, PET_CAM_LAYERS["cnn3d"]) == "features.6"


@pytest.mark.parametrize("arch, size", [("cnn3d", (64, 64, 40)), ("resnet10", (32, 32, 24)), ("senet", (64, 64, 40))])
def test_one_cam_layer_rule_gives_the_architectures_last_block(arch, size):
    """AttributionViewer and PetRecurrence share one default Grad-CAM layer rule; on the study's
    networks it names the block of :data:`PET_CAM_LAYERS` (a stack that pools after its last
    block, CNN3D's ``features``, gives way to that block)."""
    from clinicalai.attribution.layers import default_cam_layer

    name, kwargs, _ = PET_ARCHITECTURES[arch]
    net = build_network(name, kwargs).eval()
    assert default_cam_layer(net, torch.zeros(1, 1, *size)) == PET_CAM_LAYERS[arch]


@pytest.mark.parametrize("model", ["pet-cnn3d-fold0", "pet-cnn3d-fold1", "pet-cnn3d-fold2", "brain-lesion-classifier"])
def test_bundled_cards_name_the_default_cam_layer(model):
    """The bundled classifiers' cards name the layer the rule finds (PET folds: the demo CNN3D's
    last block ``features.2``; the brain-lesion classifier: ``layer4``)."""
    from clinicalai.attribution.layers import default_cam_layer
    from clinicalai.models import bundled_model, load_model

    m = load_model(bundled_model(model), device="cpu")
    size = tuple(m.card.input.size or (32, 32))
    x = torch.zeros(1, m.card.input.channels, *(size if m.card.spatial_dims == 3 else size[::-1]))
    assert default_cam_layer(m.module, x) == m.card.cam_layer


def test_pet_class_names_are_defined_once():
    """The phantoms' labels and the training cards take the engine's class names."""
    from clinicalai.pet.classes import CLASSES, LABELS, POSITIVE_CLASS
    from clinicalai.pet.train import LABEL_WORDS
    from clinicalai.phantoms.pet import LABELS as PHANTOM_LABELS

    assert CLASSES == ["treatment-related change", "recurrence"] and POSITIVE_CLASS == "recurrence"
    assert PHANTOM_LABELS is LABELS and LABELS == {0: "treatment-related change", 1: "recurrence"}
    assert all(LABEL_WORDS[name] == k for k, name in LABELS.items())

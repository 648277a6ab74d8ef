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

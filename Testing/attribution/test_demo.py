"""run_demo with the bundled brain-lesion classifier: every method's map on the image grid."""

import json

from clinicalai.attribution.demo import DEMO_METHODS, run_demo
from clinicalai.volume import read_volume


def test_run_demo_writes_every_map_on_the_image_grid(tmp_path):
    summary = run_demo(tmp_path)
    image = read_volume(tmp_path / "image.nii.gz")
    for method in DEMO_METHODS:
        m = read_volume(tmp_path / f"map_{method.replace('+', 'p')}.nii.gz")
        assert m.same_grid(image, atol=1e-4)
    record = json.loads((tmp_path / "attribution.json").read_text())
    assert set(record["methods"]) == set(DEMO_METHODS)
    assert summary["model"] == "brain-lesion-classifier"
    # the constrained demo classifier's integrated-gradients map finds the phantom's lesion
    assert record["methods"]["integrated-gradients"]["auroc"] > 0.8
    assert record["randomization_check"]["passed"] is True

"""AttributionViewer's MRML logic end to end on a brain phantom with a small MONAI classifier
saved as a model package: map nodes on the input grid, metrics and correlation tables,
threshold -> segmentation, randomised-model check, and a cancelled run adds no node."""

import re

import numpy as np
import pytest

from clinicalai.errors import Cancelled, InputError
from clinicalai.mrml.attribution_logic import AttributionViewerLogic, AttributionViewerParameters, prediction_text
from clinicalai.mrml.display import DIVERGING_TABLE, HEAT_TABLE
from clinicalai.mrml.segmentations import add_segmentation_node, segmentation_to_labels
from clinicalai.mrml.tables import table_rows
from clinicalai.mrml.volumes import add_volume_node, node_to_volume
from clinicalai.progress import CancelToken


@pytest.fixture(scope="module")
def brain():
    from scipy.spatial.transform import Rotation

    from clinicalai.phantoms.brain import brain_case

    oblique = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    return brain_case(2, shape=(24, 32, 32), pathological=True, direction=oblique)


def _scene_inputs(ctx, brain):
    image = add_volume_node(ctx.scene, brain.image, "brain")
    lesion = add_segmentation_node(ctx.scene, brain.lesion.with_array((brain.lesion.array > 0).astype(np.uint8)), "lesion", [{"name": "lesion", "value": 1}])
    return image, lesion


def test_maps_tables_threshold_and_randomization(ctx, classifier, brain):
    image, lesion = _scene_inputs(ctx, brain)
    logic = AttributionViewerLogic(ctx)
    params = logic.run(AttributionViewerParameters(
        input_volume=image.GetID(), model=classifier, methods=["gradient", "gradcam"], lesion=lesion.GetID(), device="cpu"))
    maps = [ctx.scene.GetNodeByID(i) for i in params.maps]
    assert [m.GetName() for m in maps] == ["brain - Gradient", "brain - Grad-CAM"]
    for node in maps:
        assert node_to_volume(node).same_grid(brain.image, atol=1e-4)
        assert np.isfinite(node_to_volume(node).array).all()
    assert maps[0].GetDisplayNode().GetColorNode().GetName() == DIVERGING_TABLE  # gradient: signed
    assert maps[1].GetDisplayNode().GetColorNode().GetName() == HEAT_TABLE  # CAM: non-negative
    metrics = table_rows(ctx.scene.GetNodeByID(params.metrics_table))
    assert [r["map"] for r in metrics] == ["gradient", "gradcam"]
    assert all(0.0 <= r["dice"] <= 1.0 and 0.0 <= r["auroc"] <= 1.0 for r in metrics)
    assert params.summary["target"] in (0, 1) and params.summary["target_name"] in ("healthy", "lesion")
    assert logic.get_parameters().summary == params.summary  # stored with the scene
    # the classifier's prediction in words (shown by the panels): a class and its probability
    assert re.fullmatch(r"(healthy|lesion) \((P|highest P over slices) = [01]\.\d{3}\)", prediction_text(params.summary))
    corr = table_rows(ctx.scene.GetNodeByID(params.correlation_table))
    assert len(corr) == 1 and -1.0 <= corr[0]["spearman"] <= 1.0

    seg = logic.threshold_to_segmentation(params.maps[1], 0.5)
    mask = segmentation_to_labels(seg, brain.image).array
    cam = node_to_volume(maps[1]).array
    np.testing.assert_array_equal(mask, (cam >= 0.5 * cam.max()).astype(np.uint8))
    with pytest.raises(InputError, match="fraction"):
        logic.threshold_to_segmentation(params.maps[1], 1.5)

    table = logic.randomization_check("gradient")
    row = table_rows(table)[0]
    assert row["method"] == "gradient" and -1.0 <= row["spearman_abs"] <= 1.0 and "passed" in row
    assert logic.get_parameters().randomization_table == table.GetID()


def test_metrics_table_equals_the_command_line(ctx, classifier, brain, tmp_path):
    """The module's table and `clinicalai explain --lesion` give the same numbers (signed maps too)."""
    import json

    from clinicalai.cli import main
    from clinicalai.volume import write_volume

    image, lesion = _scene_inputs(ctx, brain)
    params = AttributionViewerLogic(ctx).run(AttributionViewerParameters(
        input_volume=image.GetID(), model=classifier, methods=["gradient"], lesion=lesion.GetID(), device="cpu"))
    row = table_rows(ctx.scene.GetNodeByID(params.metrics_table))[0]
    write_volume(brain.image, tmp_path / "brain.nii.gz")
    write_volume(brain.lesion.with_array((brain.lesion.array > 0).astype(np.uint8)), tmp_path / "lesion.nii.gz")
    assert main(["explain", str(tmp_path / "brain.nii.gz"), "--model", str(classifier), "--method", "gradient",
                 "--lesion", str(tmp_path / "lesion.nii.gz"), "-o", str(tmp_path / "map.nii.gz"),
                 "--json", str(tmp_path / "r.json"), "--device", "cpu"]) == 0
    cli = json.loads((tmp_path / "r.json").read_text())["scores"]
    for key in ("dice", "auroc", "auprc", "pointing_game", "positive_share"):
        assert row[key] == pytest.approx(cli[key], abs=1e-4), key


def test_cancelled_and_failing_runs_add_no_node(ctx, classifier, brain, node_ids):
    image, lesion = _scene_inputs(ctx, brain)
    logic = AttributionViewerLogic(ctx)
    before = node_ids(ctx.scene)
    token = CancelToken()
    token.cancel()
    params = AttributionViewerParameters(input_volume=image.GetID(), model=classifier, methods=["gradient"], device="cpu")
    with pytest.raises(Cancelled):
        logic.run(params, cancel=token)
    assert node_ids(ctx.scene) == before
    with pytest.raises(InputError, match="unknown attribution method"):
        logic.run(AttributionViewerParameters(input_volume=image.GetID(), model=classifier, methods=["gradient", "nonsense"], device="cpu"))
    assert node_ids(ctx.scene) == before
    with pytest.raises(InputError, match="no input volume"):
        logic.run(AttributionViewerParameters(model=classifier))
    assert node_ids(ctx.scene) == before


def _refused_without_a_node(ctx, logic, node_ids, message: str, **params) -> None:
    """A run with ``params`` (on the CPU) is one clear error, ``message``, and adds no node."""
    before = node_ids(ctx.scene)
    with pytest.raises(InputError, match=re.escape(message)):
        logic.run(AttributionViewerParameters(device="cpu", **params))
    assert node_ids(ctx.scene) == before


def test_integrated_gradients_baseline_from_the_panel(ctx, classifier, brain, node_ids):
    """The panel's baseline reaches the engine (the map equals ``attribute(..., baseline=...)``
    on the input grid); a name the engine does not know is one clear error and adds no node."""
    from clinicalai.attribution import attribute
    from clinicalai.mrml.model_choices import baseline_choices

    assert [c["value"] for c in baseline_choices()] == ["", "zero", "blur", "mean", "mirror"]
    image, _ = _scene_inputs(ctx, brain)
    logic = AttributionViewerLogic(ctx)
    _refused_without_a_node(ctx, logic, node_ids, "unknown integrated-gradients baseline 'noise'; choose one of zero, blur, mean, mirror",
                            input_volume=image.GetID(), model=classifier, methods=["integrated-gradients"], baseline="noise")
    params = logic.run(AttributionViewerParameters(input_volume=image.GetID(), model=classifier,
                                                   methods=["integrated-gradients"], baseline="blur", device="cpu"))
    assert logic.get_parameters().baseline == "blur"  # saved with the scene
    made = node_to_volume(ctx.scene.GetNodeByID(params.maps[0]))
    engine = attribute(classifier, brain.image, "integrated-gradients", baseline="blur", target=params.summary["target"])
    zero = attribute(classifier, brain.image, "integrated-gradients", target=params.summary["target"])
    assert made.same_grid(brain.image, atol=1e-4)
    np.testing.assert_allclose(made.array, engine.array, atol=1e-5)
    assert not np.allclose(made.array, zero.array, atol=1e-3)


def test_background_run_computes_in_a_thread_and_applies_on_poll(ctx, classifier, brain, node_ids):
    import threading

    from clinicalai.mrml.runner import BackgroundRun

    image, _ = _scene_inputs(ctx, brain)
    logic = AttributionViewerLogic(ctx)
    threads = []
    original = logic.compute

    def compute(*args, **kwargs):
        threads.append(threading.current_thread())
        return original(*args, **kwargs)

    logic.compute = compute
    before = node_ids(ctx.scene)
    run = BackgroundRun(logic, AttributionViewerParameters(input_volume=image.GetID(), model=classifier, methods=["gradient"], device="cpu"))
    while not run.poll(wait=0.05):
        pass
    assert run.error is None and threads and threads[0] is not threading.main_thread()
    assert run.fraction == pytest.approx(1.0)
    added = [i for i in node_ids(ctx.scene) if i not in before]
    assert run.params.maps[0] in added and ctx.scene.GetNodeByID(run.params.maps[0]).GetName() == "brain - Gradient"


def test_anomaly_map_from_a_generative_model(ctx, brain, classifier, anomaly_model):
    image, lesion = _scene_inputs(ctx, brain)
    logic = AttributionViewerLogic(ctx)
    params = logic.run(AttributionViewerParameters(
        input_volume=image.GetID(), model=classifier, methods=["gradient"], anomaly_model=anomaly_model, lesion=lesion.GetID(), device="cpu"))
    nodes = [ctx.scene.GetNodeByID(i) for i in params.maps]
    assert [n.GetName() for n in nodes] == ["brain - Gradient", "brain - anomaly map"]
    assert nodes[1].GetDisplayNode().GetColorNode().GetName() == HEAT_TABLE
    assert node_to_volume(nodes[1]).same_grid(brain.image, atol=1e-4)
    assert np.isfinite(params.summary["anomaly_score"]) and params.summary["anomaly_score_name"]
    assert [r["map"] for r in table_rows(ctx.scene.GetNodeByID(params.metrics_table))] == ["gradient", "anomaly"]
    corr = table_rows(ctx.scene.GetNodeByID(params.correlation_table))
    assert [(r["map A"], r["map B"]) for r in corr] == [("gradient", "anomaly")]


def test_anomaly_map_polarity_from_the_panel(ctx, brain, anomaly_model, node_ids):
    """The panel's anomaly-map polarity reaches the engine (the map node equals
    ``anomaly(..., polarity=...)``) and is saved with the scene; a name the engine does not
    know is one clear error that adds no node."""
    from clinicalai.generative import anomaly
    from clinicalai.mrml.model_choices import polarity_choices

    assert [c["value"] for c in polarity_choices()] == ["", "both", "brighter", "darker"]
    image, _ = _scene_inputs(ctx, brain)
    logic = AttributionViewerLogic(ctx)
    _refused_without_a_node(ctx, logic, node_ids, "the anomaly map's polarity must be one of both, brighter, darker, got 'hot'",
                            input_volume=image.GetID(), anomaly_model=anomaly_model, anomaly_polarity="hot")
    params = logic.run(AttributionViewerParameters(input_volume=image.GetID(), anomaly_model=anomaly_model,
                                                   anomaly_polarity="darker", device="cpu"))
    assert logic.get_parameters().anomaly_polarity == "darker"  # saved with the scene
    made = node_to_volume(ctx.scene.GetNodeByID(params.maps[0]))
    engine = anomaly(brain.image, anomaly_model, polarity="darker")
    unsigned = anomaly(brain.image, anomaly_model)
    np.testing.assert_allclose(made.array, engine.map.array, atol=1e-5)
    assert float(np.min(made.array)) >= 0.0 and not np.allclose(made.array, unsigned.map.array, atol=1e-3)

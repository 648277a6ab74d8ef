"""SegCorrect's MRML logic below the engine: result nodes, accept / reject per slice,
jump to slice, and that cancelled or failing runs leave the scene unchanged."""

import numpy as np
import pytest

from clinicalai.errors import Cancelled, InputError
from clinicalai.mrml.masks import OPEN_AS_LABELMAP, add_mask_node
from clinicalai.mrml.segcorrect_logic import SegCorrectInputs, SegCorrectLogic, SegCorrectOutcome, SegCorrectParameters
from clinicalai.mrml.segmentations import add_segmentation_node, segmentation_to_labels
from clinicalai.mrml.tables import table_rows
from clinicalai.mrml.volumes import add_volume_node, node_to_volume
from clinicalai.phantoms.cardiac import cardiac_case, cardiac_segments
from clinicalai.progress import CancelToken



@pytest.fixture(scope="module")
def case():
    from scipy.spatial.transform import Rotation

    oblique = Rotation.from_euler("xyz", [15, -25, 40], degrees=True).as_matrix()
    return cardiac_case(3, size=(48, 48), n_slices=6, direction=oblique, origin=(4.0, -8.0, 12.0))


def _outcome(case):
    """A raw mask with slices 1 and 3 damaged, and a 'corrected' mask = the truth."""
    truth = case.labels
    raw = truth.array.copy()
    raw[1][raw[1] == 2] = 0  # MYO lost on slice 1
    raw[3] = np.roll(raw[3], 5, axis=1)
    from clinicalai.segcorrect.pipeline import SliceDecision

    bad = (1, 3)
    slices = [
        SliceDecision(index=k, valid_before=k not in bad, valid_after=True,
                      criteria_before={"myo_one_component": k not in bad}, criteria_after={"myo_one_component": True},
                      dice_raw_vs_corrected=0.5 if k in bad else 1.0,
                      decision="corrected" if k in bad else "kept raw", reason="test")
        for k in range(truth.shape[0])
    ]
    return SegCorrectOutcome(truth.with_array(raw), truth, truth.copy(), slices, cardiac_segments())


def _inputs(ctx, case):
    image = add_volume_node(ctx.scene, case.image, "heart")
    return image, SegCorrectInputs(image_node=image, image=case.image)


def test_apply_makes_raw_corrected_final_and_table(ctx, case):
    logic = SegCorrectLogic(ctx)
    image, inputs = _inputs(ctx, case)
    params = logic.finish(SegCorrectParameters(input_volume=image.GetID()), inputs, _outcome(case))
    names = {k: ctx.scene.GetNodeByID(getattr(params, k)).GetName() for k in ("raw_segmentation", "corrected_segmentation", "output_segmentation", "slice_table")}
    assert names == {"raw_segmentation": "heart raw", "corrected_segmentation": "heart corrected",
                     "output_segmentation": "heart segmentation", "slice_table": "heart slices"}
    final = ctx.scene.GetNodeByID(params.output_segmentation)
    seg = final.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == ["RV", "MYO", "LV"]
    np.testing.assert_array_equal(segmentation_to_labels(final, case.image).array, case.labels.array)
    rows = table_rows(ctx.scene.GetNodeByID(params.slice_table))
    assert [r["decision"] for r in rows] == ["kept raw", "corrected", "kept raw", "corrected", "kept raw", "kept raw"]
    assert {"slice", "valid raw", "valid corrected", "Dice raw vs corrected", "reason"} <= set(rows[0])
    assert rows[1]["valid raw"] == "no: myo_one_component" and rows[1]["Dice raw vs corrected"] == 0.5
    assert logic.get_parameters() == params  # stored in the parameter node


def test_accept_and_reject_change_the_final_segmentation(ctx, case):
    logic = SegCorrectLogic(ctx)
    image, inputs = _inputs(ctx, case)
    outcome = _outcome(case)
    params = logic.finish(SegCorrectParameters(input_volume=image.GetID()), inputs, outcome)
    final = lambda: segmentation_to_labels(ctx.scene.GetNodeByID(params.output_segmentation), case.image).array  # noqa: E731

    params = logic.set_correction(False, [1], params)  # reject slice 1: raw comes back there only
    np.testing.assert_array_equal(final()[1], outcome.raw.array[1])
    np.testing.assert_array_equal(final()[3], case.labels.array[3])
    assert params.decisions[1] == "kept raw"
    assert table_rows(ctx.scene.GetNodeByID(params.slice_table))[1]["decision"] == "kept raw"

    params = logic.set_correction(False, None, params)  # reject all: final = raw
    np.testing.assert_array_equal(final(), outcome.raw.array)
    params = logic.set_correction(True, None, params)  # accept all: final = corrected
    np.testing.assert_array_equal(final(), case.labels.array)
    assert logic.get_parameters().decisions == ["corrected"] * case.image.shape[0]
    with pytest.raises(InputError, match="outside"):
        logic.set_correction(True, [99], params)


def test_jump_to_row_centres_slice_views_on_that_slice(ctx, case):
    logic = SegCorrectLogic(ctx)
    image, inputs = _inputs(ctx, case)
    params = logic.finish(SegCorrectParameters(input_volume=image.GetID()), inputs, _outcome(case))
    red = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    ras = logic.jump_to_row(4, params)
    # the slice centre is voxel ((nx-1)/2, (ny-1)/2, 4) mapped by LPS geometry, then flipped to RAS
    z, y, x = case.image.shape
    lps = case.image.index_to_lps() @ np.array([(x - 1) / 2, (y - 1) / 2, 4, 1.0])
    np.testing.assert_allclose(ras, lps[:3] * [-1, -1, 1], atol=1e-6)
    assert red.GetSliceOffset() == pytest.approx(ras[2], abs=1e-6)  # axial view: offset = S


def test_cancel_and_failure_add_no_node_and_keep_the_users_segmentation(ctx, case, node_ids):
    logic = SegCorrectLogic(ctx)
    image, inputs = _inputs(ctx, case)
    mine = add_segmentation_node(ctx.scene, case.labels.with_array(np.ones(case.labels.shape, np.uint8)), "mine")
    before = node_ids(ctx.scene)
    token = CancelToken()
    token.cancel()
    params = SegCorrectParameters(input_volume=image.GetID(), output_segmentation=mine.GetID())
    with pytest.raises(Cancelled):
        logic.finish(params, inputs, _outcome(case), cancel=token)
    assert node_ids(ctx.scene) == before

    broken = _outcome(case)
    broken.slices[2].index = 99  # apply fails after the raw and corrected nodes were made
    with pytest.raises(IndexError):
        logic.finish(params, inputs, broken)
    assert node_ids(ctx.scene) == before
    np.testing.assert_array_equal(segmentation_to_labels(mine, case.image).array, 1)  # untouched

    params.input_segmentation = mine.GetID()  # output = input would overwrite the user's mask
    with pytest.raises(InputError, match="must not be the input"):
        logic.prepare(params)
    assert node_ids(ctx.scene) == before


def _bundled_or_skip(*stems):
    pytest.importorskip("clinicalai.segcorrect.pipeline")
    from clinicalai.models import BUNDLED_MODELS_DIR

    for stem in stems:
        if not (BUNDLED_MODELS_DIR / f"{stem}.json").is_file():
            pytest.skip(f"bundled model {stem} is not installed (make models)")


@pytest.fixture(scope="module")
def phantom():
    return cardiac_case(11, size=(112, 112), n_slices=6)


def _dice(a, b):
    return 2 * np.sum((a > 0) & (b > 0)) / (np.sum(a > 0) + np.sum(b > 0))


def test_end_to_end_with_correction(ctx, phantom, node_ids, corrector_model):
    """The bundled segmenter and a small untrained corrector (the gate then mostly keeps the
    raw slices: the workflow is tested here, the corrector by the SegCorrect area)."""
    _bundled_or_skip("cardiac-unet")
    corrector = corrector_model
    image = add_volume_node(ctx.scene, phantom.image, "heart")
    logic = SegCorrectLogic(ctx)
    params = logic.run(SegCorrectParameters(input_volume=image.GetID(), corrector_model=corrector, device="cpu"))
    assert params.corrected_segmentation and ctx.scene.GetNodeByID(params.corrected_segmentation).GetName() == "heart corrected"
    final_node = ctx.scene.GetNodeByID(params.output_segmentation)
    seg = final_node.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == ["RV", "MYO", "LV"]
    assert _dice(segmentation_to_labels(final_node, phantom.image).array, phantom.labels.array) > 0.9
    assert len(table_rows(ctx.scene.GetNodeByID(params.slice_table))) == phantom.image.shape[0]

    # a mask made by any tool: corrected into new nodes, never overwritten
    mine = add_segmentation_node(ctx.scene, phantom.labels, "manual", cardiac_segments())
    before = segmentation_to_labels(mine, phantom.image).array
    params = logic.run(SegCorrectParameters(input_volume=image.GetID(), input_segmentation=mine.GetID(), corrector_model=corrector, device="cpu"))
    np.testing.assert_array_equal(segmentation_to_labels(mine, phantom.image).array, before)
    assert params.output_segmentation != mine.GetID()
    from_segmentation = segmentation_to_labels(ctx.scene.GetNodeByID(params.output_segmentation), phantom.image).array

    # the same mask as a label map (a NIfTI opened as a mask): corrected alike, left unchanged
    labelmap = add_mask_node(ctx.scene, phantom.labels, "manual labels", OPEN_AS_LABELMAP, image)
    params = logic.run(SegCorrectParameters(input_volume=image.GetID(), input_segmentation=labelmap.GetID(), corrector_model=corrector, device="cpu"))
    np.testing.assert_array_equal(segmentation_to_labels(ctx.scene.GetNodeByID(params.output_segmentation), phantom.image).array,
                                  from_segmentation)
    np.testing.assert_array_equal(node_to_volume(labelmap).array, phantom.labels.array)
    # another tool's numbering (7 is no label of the corrector): refused, nothing added
    other = add_mask_node(ctx.scene, phantom.labels.with_array(np.where(phantom.labels.array == 3, 7, phantom.labels.array)),
                          "other numbering", OPEN_AS_LABELMAP, image)
    ids = node_ids(ctx.scene)
    with pytest.raises(InputError, match=r"holds values \[7\], not the labels of .*3 = LV"):
        logic.run(SegCorrectParameters(input_volume=image.GetID(), input_segmentation=other.GetID(), corrector_model=corrector, device="cpu"))
    assert node_ids(ctx.scene) == ids

    ids = node_ids(ctx.scene)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        logic.run(SegCorrectParameters(input_volume=image.GetID(), corrector_model=corrector, device="cpu"), cancel=token)
    assert node_ids(ctx.scene) == ids


def test_input_warnings_reach_the_panel_state(ctx, phantom):
    """The reader's warnings travel with the volume node, and a run reports them with the
    model-fit warnings (a CT given to the MR segmenter) in the parameter node."""
    _bundled_or_skip("cardiac-unet")
    from clinicalai.mrml.volumes import node_to_volume

    ct = phantom.image.with_array(phantom.image.array, modality="CT")
    ct.metadata["warnings"] = ["slice positions are rounded: gaps vary by 1.4 %"]
    image = add_volume_node(ctx.scene, ct, "ct heart")
    assert node_to_volume(image).metadata["warnings"] == ct.metadata["warnings"]
    # a CT for the MR segmenter: run only once the user said so (issue 16 item 6), then reported once
    params = SegCorrectLogic(ctx).run(SegCorrectParameters(input_volume=image.GetID(), correct=False, device="cpu",
                                                           confirmed_fit=True))
    assert params.warnings[0] == "slice positions are rounded: gaps vary by 1.4 %"
    assert sum("is CT but model cardiac-unet was made for MR" in w for w in params.warnings) == 1, params.warnings
    fitting = add_volume_node(ctx.scene, phantom.image, "mr heart")
    assert SegCorrectLogic(ctx).run(SegCorrectParameters(input_volume=fitting.GetID(), correct=False, device="cpu")).warnings == []


def test_gui_and_logic_keep_one_copy_of_the_panel_state(ctx, case):
    """SegCorrect's node references and its "correct" switch are the very values the desktop
    panel's parameterNodeWrapper edits (Slicer's NodeSerializer: the reference and a "" parameter
    under the field's name; its BoolSerializer: "True" / "False"): neither side copies the other."""
    logic = SegCorrectLogic(ctx)
    image = add_volume_node(ctx.scene, case.image, "heart")
    node = logic.parameter_node()
    logic.set_parameters(SegCorrectParameters(input_volume=image.GetID(), correct=False))
    assert node.HasParameter("inputVolume") and node.GetNodeReferenceID("inputVolume") == image.GetID()
    assert node.GetParameter("correct") == "False"
    # what the wrapper writes, the logic reads
    mine = add_segmentation_node(ctx.scene, case.labels, "mine")
    node.SetParameter("outputSegmentation", "")
    node.SetNodeReferenceID("outputSegmentation", mine.GetID())
    node.SetParameter("correct", "True")
    params = logic.get_parameters()
    assert (params.input_volume, params.output_segmentation, params.correct) == (image.GetID(), mine.GetID(), True)
    node.SetParameter("correct", "false")  # a scene saved before: JSON
    assert logic.get_parameters().correct is False


def test_next_best_swaps_a_slice_to_its_runner_up(ctx, case):
    """With the evidence strategy's ranking, "next best" puts the slice's runner-up into the
    corrected and final segmentations, accepts that slice only, and cycles back to the best."""
    from clinicalai.segcorrect.candidates import Evidence, candidates_for_slice
    from clinicalai.segcorrect.validity import CARDIAC_VALUES

    logic = SegCorrectLogic(ctx)
    image, inputs = _inputs(ctx, case)
    outcome = _outcome(case)
    raw1 = outcome.raw.array[1].astype(np.int64)
    ranking = candidates_for_slice(raw1, {"network": case.labels.array[1].astype(np.int64)}, CARDIAC_VALUES,
                                   Evidence((1, 2, 3), None, raw1))
    valid = [c for c in ranking if c.validity.valid]
    assert len(valid) >= 2 and not np.array_equal(valid[0].labels, valid[1].labels)
    outcome.slices[1].ranking = ranking
    params = logic.finish(SegCorrectParameters(input_volume=image.GetID()), inputs, outcome)
    with pytest.raises(InputError, match="no next best"):
        logic.next_best(0, params)  # a valid slice: no candidates
    with pytest.raises(InputError, match="outside the volume"):
        logic.next_best(99, params)
    logic.set_correction(False, [1], params)
    before = segmentation_to_labels(ctx.scene.GetNodeByID(params.output_segmentation), case.image).array
    shown = logic.next_best(1, params)
    assert shown["rank"] == 1 and shown["source"] == valid[1].source
    final = segmentation_to_labels(ctx.scene.GetNodeByID(params.output_segmentation), case.image).array
    corrected = segmentation_to_labels(ctx.scene.GetNodeByID(params.corrected_segmentation), case.image).array
    np.testing.assert_array_equal(final[1], valid[1].labels)
    np.testing.assert_array_equal(corrected[1], valid[1].labels)
    np.testing.assert_array_equal(np.delete(final, 1, 0), np.delete(before, 1, 0))
    assert logic.get_parameters().decisions[1] == "corrected"
    rows = table_rows(ctx.scene.GetNodeByID(params.slice_table))
    assert rows[1]["decision"] == "corrected"
    for _ in range(len(valid) - 1):
        shown = logic.next_best(1, params)
    assert shown["rank"] == 0  # after the last, the best again
    np.testing.assert_array_equal(
        segmentation_to_labels(ctx.scene.GetNodeByID(params.output_segmentation), case.image).array[1], valid[0].labels)


def test_strategy_titles_name_every_engine_strategy_and_a_bad_one_is_refused(ctx, case):
    """The panels' correction selector (desktop and browser) lists the engine's strategies, in
    its order, and a strategy the engine does not know stops before anything is added."""
    from clinicalai.mrml.segcorrect_logic import STRATEGY_TITLES
    from clinicalai.segcorrect import STRATEGIES

    assert tuple(STRATEGY_TITLES) == STRATEGIES
    image, _ = _inputs(ctx, case)
    nodes = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="correction strategy must be one of"):
        SegCorrectLogic(ctx).prepare(SegCorrectParameters(input_volume=image.GetID(), strategy="everything"))
    assert ctx.scene.GetNumberOfNodes() == nodes

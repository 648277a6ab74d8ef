"""PetRecurrence's MRML logic: result table and summary in the parameter node, Grad-CAM node
as heat-coloured foreground over the PET with opacity / threshold controls, masks from
segmentation or labelmap nodes, transactional failure; end to end with fold models."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.mrml.display import HEAT_TABLE
from clinicalai.mrml.logic import mask_from_node
from clinicalai.mrml.pet_logic import PetOutcome, PetRecurrenceLogic, PetRecurrenceParameters
from clinicalai.mrml.segmentations import add_segmentation_node
from clinicalai.mrml.tables import table_rows
from clinicalai.mrml.volumes import add_volume_node, node_to_volume


@pytest.fixture(scope="module")
def pet():
    from scipy.spatial.transform import Rotation

    from clinicalai.phantoms.pet import pet_case

    return pet_case(4, recurrence=True, scanner="B", direction=Rotation.from_euler("z", 15, degrees=True).as_matrix())


def _views(scene):
    out = []
    for name in ("Red", "Yellow", "Green"):
        c = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        c.SetLayoutName(name)
        out.append(c)
    return out


def _outcome(pet):
    cam = pet.lesion.with_array(pet.lesion.array.astype(np.float32) * 2.0, units=None)
    summary = {"probability": 0.8, "label": "recurrence", "spread": 0.05, "fold_probabilities": [0.75, 0.85],
               "warnings": ["attention outside the brain"], "static": {"SUVmax": 3.2, "TBRmax": 2.5, "TBRmean": 1.9}}
    return PetOutcome(summary, cam)


def test_apply_makes_table_and_cam_foreground_and_display_controls(ctx, pet):
    views = _views(ctx.scene)
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    logic = PetRecurrenceLogic(ctx)
    params = logic.finish(PetRecurrenceParameters(input_volume=image.GetID(), cam_opacity=0.3, cam_threshold=0.25),
                          {"image_node": image, "pet": pet.suv}, _outcome(pet))
    cam = ctx.scene.GetNodeByID(params.cam_volume)
    assert cam.GetName() == "pet Grad-CAM" and node_to_volume(cam).same_grid(pet.suv)
    display = cam.GetDisplayNode()
    assert display.GetColorNode().GetName() == HEAT_TABLE
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.5)  # 0.25 x max 2
    for c in views:
        assert (c.GetBackgroundVolumeID(), c.GetForegroundVolumeID()) == (image.GetID(), cam.GetID())
        assert c.GetForegroundOpacity() == pytest.approx(0.3)
    rows = {r["quantity"]: r["value"] for r in table_rows(ctx.scene.GetNodeByID(params.results_table))}
    assert rows["P(recurrence)"] == "0.8" and rows["label"] == "recurrence" and rows["TBRmax"] == "2.5"
    assert rows["warning"] == "attention outside the brain"
    assert logic.get_parameters().summary["static"]["SUVmax"] == 3.2

    logic.set_cam_display(opacity=0.7, threshold=0.5)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.7) for c in views)
    assert display.GetLowerThreshold() == pytest.approx(1.0)
    assert logic.get_parameters().cam_opacity == pytest.approx(0.7)


def test_cam_off_the_pet_grid_adds_no_node(ctx, pet, node_ids):
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    before = node_ids(ctx.scene)
    bad = _outcome(pet)
    bad.cam = bad.cam.with_array(bad.cam.array, spacing=(9.0, 9.0, 9.0))
    with pytest.raises(InputError, match="not on the PET grid"):
        PetRecurrenceLogic(ctx).finish(PetRecurrenceParameters(input_volume=image.GetID()), {"image_node": image, "pet": pet.suv}, bad)
    assert node_ids(ctx.scene) == before


def test_masks_from_segmentation_and_labelmap_nodes(ctx, pet):
    brain = pet.brain_mask.with_array((pet.brain_mask.array > 0).astype(np.uint8))
    seg = add_segmentation_node(ctx.scene, brain, "brain", [{"name": "brain", "value": 1}])
    label = add_volume_node(ctx.scene, brain, "brain label", class_name="vtkMRMLLabelMapVolumeNode")
    for node in (seg, label):
        mask = mask_from_node(ctx.scene, node.GetID(), pet.suv, "brain mask")
        assert mask.same_grid(pet.suv)
        np.testing.assert_array_equal(mask.array, brain.array)
    assert mask_from_node(ctx.scene, None, pet.suv, "brain mask") is None
    empty = add_segmentation_node(ctx.scene, brain.with_array(np.zeros_like(brain.array)), "empty", [{"name": "x", "value": 1}])
    with pytest.raises(InputError, match="empty"):
        mask_from_node(ctx.scene, empty.GetID(), pet.suv, "brain mask")


def test_end_to_end_with_fold_models(ctx, pet, pet_models, node_ids):
    """With two small untrained fold models (the bundled ones are tested by the PET area)."""
    from clinicalai.errors import Cancelled
    from clinicalai.progress import CancelToken

    pytest.importorskip("clinicalai.pet.workflow")
    models = pet_models
    views = _views(ctx.scene)
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    brain = add_segmentation_node(ctx.scene, pet.brain_mask.with_array((pet.brain_mask.array > 0).astype(np.uint8)), "brain", [{"name": "brain", "value": 1}])
    logic = PetRecurrenceLogic(ctx)
    params = logic.run(PetRecurrenceParameters(input_volume=image.GetID(), brain_mask=brain.GetID(), units="suv", models=models, device="cpu"))
    s = params.summary
    assert 0.0 <= s["probability"] <= 1.0 and s["label"] and len(s["fold_probabilities"]) == len(models)
    assert s["probability"] == pytest.approx(np.mean(s["fold_probabilities"]), abs=1e-6)
    assert s["static"]["SUVmax"] > 0 and "TBRmax" in s["static"]
    cam = ctx.scene.GetNodeByID(params.cam_volume)
    assert node_to_volume(cam).same_grid(pet.suv, atol=1e-4) and np.isfinite(node_to_volume(cam).array).all()
    assert views[0].GetForegroundVolumeID() == cam.GetID()

    before = node_ids(ctx.scene)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        logic.run(PetRecurrenceParameters(input_volume=image.GetID(), units="suv", models=models, device="cpu"), cancel=token)
    assert node_ids(ctx.scene) == before

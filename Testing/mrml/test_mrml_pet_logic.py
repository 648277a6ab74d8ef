"""PetRecurrence's MRML logic: result table and summary in the parameter node, Grad-CAM node
as heat-coloured foreground over the PET with opacity / threshold controls, masks from
segmentation or labelmap nodes, the lesion VOI found by the engine as a new segmentation (the
user's VOI never touched), transactional failure; end to end with fold models."""

import numpy as np
import pytest
from scene_builders import browse, browsed_sequence, sequence_of

from clinicalai.errors import InputError
from clinicalai.mrml.display import HEAT_TABLE
from clinicalai.mrml.scene import mask_from_node
from clinicalai.mrml.pet_logic import LESION_VOI_COLOR, PetInputs, PetOutcome, PetRecurrenceLogic, PetRecurrenceParameters
from clinicalai.mrml.segmentations import add_segmentation_node, segmentation_to_labels
from clinicalai.mrml.tables import table_rows
from clinicalai.mrml.volumes import add_volume_node, ijk_to_ras, node_to_volume


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


def _outcome(pet, lesion_mask=None):
    # as PetResult.cam_evidence gives it: Grad-CAM x P(recurrence) in [0, 1]
    cam = pet.lesion.with_array(pet.lesion.array.astype(np.float32) * 0.8, units=None)
    summary = {"probability": 0.8, "label": "recurrence", "spread": 0.05, "fold_probabilities": [0.75, 0.85],
               "warnings": ["attention outside the brain"], "static": {"SUVmax": 3.2, "TBRmax": 2.5, "TBRmean": 1.9}}
    return PetOutcome(summary, cam, lesion_mask)


def _found_voi(pet):
    """A VOI as the engine gives it when it found one: 0/1 on the PET grid, not the phantom's
    lesion (so a node filled from the wrong mask would show)."""
    voi = np.zeros(pet.suv.shape, np.uint8)
    z, y, x = (np.array(pet.suv.shape) * np.array([0.4, 0.55, 0.35])).astype(int)
    voi[z - 2: z + 3, y - 3: y + 2, x - 1: x + 4] = 1
    voi[z, y + 2, x + 4] = 1  # an odd voxel: a resampling shift would lose it
    return pet.suv.with_array(voi, modality="SEG", units="label")


def _binary_labelmap(node, segment_id):
    import slicer

    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, segment_id, image)
    return image


def _image_to_world(image):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_found_lesion_voi_becomes_a_new_segmentation_on_the_pet_grid(ctx, pet):
    views = _views(ctx.scene)
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    logic = PetRecurrenceLogic(ctx)
    found = _found_voi(pet)
    params = logic.finish(PetRecurrenceParameters(input_volume=image.GetID()), PetInputs(image_node=image, pet=pet.suv),
                          _outcome(pet, found))
    node = ctx.scene.GetNodeByID(params.lesion_voi)
    assert node is not None and node.IsA("vtkMRMLSegmentationNode") and node.GetName() == "pet lesion VOI"
    assert logic.get_parameters().lesion_voi == node.GetID() and logic.lesion_node_id() == node.GetID()
    # an outline, not a fill: the Grad-CAM peak inside the VOI stays visible (issue #16 item 9)
    assert node.GetDisplayNode().GetVisibility2DOutline() and not node.GetDisplayNode().GetVisibility2DFill()
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "lesion"
    np.testing.assert_allclose(segment.GetColor(), LESION_VOI_COLOR, atol=1e-6)
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is image
    # the labelmap is on the PET grid exactly (oblique PET: same IJK -> RAS, voxels inside its extent)
    binary = _binary_labelmap(node, segmentation.GetNthSegmentID(0))
    np.testing.assert_allclose(_image_to_world(binary), ijk_to_ras(pet.suv), atol=1e-6)
    z, y, x = pet.suv.shape
    lo, hi = np.array(binary.GetExtent()).reshape(3, 2).T
    assert (lo >= 0).all() and (hi <= np.array([x - 1, y - 1, z - 1])).all()
    # and holds the engine's voxels, read back through Slicer's labelmap conversion
    back = segmentation_to_labels(node, pet.suv)
    np.testing.assert_array_equal(back.array > 0, found.array > 0)
    # "go to lesion VOI": every slice view centred on a voxel of that VOI
    slices = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        sn = ctx.scene.AddNewNodeByClass("vtkMRMLSliceNode")
        sn.SetLayoutName(name)
        sn.SetOrientation(orientation)
        slices.append(sn)
    r, a, s = logic.jump_to_lesion()
    ijk = np.linalg.inv(ijk_to_ras(pet.suv)) @ np.array([r, a, s, 1.0])
    i, j, k = np.round(ijk[:3]).astype(int)
    np.testing.assert_allclose(ijk[:3], (i, j, k), atol=1e-4)
    assert found.array[k, j, i] == 1
    for sn in slices:
        m = sn.GetSliceToRAS()
        np.testing.assert_allclose([m.GetElement(row, 3) for row in range(3)], (r, a, s), atol=1e-3)
    del views


def test_a_users_lesion_voi_is_left_alone_and_no_voi_node_is_added(ctx, pet, node_ids):
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    user = add_segmentation_node(ctx.scene, pet.lesion.with_array((pet.lesion.array > 0).astype(np.uint8)), "my VOI",
                                 [{"name": "mine", "value": 1, "color": (0.5, 0.5, 0.5)}])
    before_voxels = segmentation_to_labels(user, pet.suv).array.copy()
    before_mtime = user.GetSegmentation().GetMTime()
    logic = PetRecurrenceLogic(ctx)
    params = logic.finish(
        PetRecurrenceParameters(input_volume=image.GetID(), lesion=user.GetID()),
        PetInputs(image_node=image, pet=pet.suv),
        _outcome(pet, _found_voi(pet)),  # the engine hands the VOI it used back: not a new node
    )
    assert params.lesion_voi is None and logic.get_parameters().lesion == user.GetID()
    segmentations = [ctx.scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode") for i in range(ctx.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    assert [n.GetName() for n in segmentations if "lesion VOI" in n.GetName()] == []
    assert user.GetName() == "my VOI" and user.GetSegmentation().GetNumberOfSegments() == 1
    assert user.GetSegmentation().GetNthSegment(0).GetName() == "mine"
    assert user.GetSegmentation().GetMTime() == before_mtime
    np.testing.assert_array_equal(segmentation_to_labels(user, pet.suv).array, before_voxels)
    assert logic.lesion_node_id() == user.GetID()
    # "go to lesion VOI" without a VOI, or with one that was removed: one clear error
    logic.set_parameters(PetRecurrenceParameters(input_volume=image.GetID()))
    with pytest.raises(InputError, match="no lesion VOI"):
        logic.jump_to_lesion(None, image)
    with pytest.raises(InputError, match="no longer in the scene"):
        logic.jump_to_lesion("vtkMRMLSegmentationNode9999", image)


def test_apply_makes_table_and_cam_foreground_and_display_controls(ctx, pet):
    views = _views(ctx.scene)
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    logic = PetRecurrenceLogic(ctx)
    params = logic.finish(PetRecurrenceParameters(input_volume=image.GetID(), cam_opacity=0.3, cam_threshold=0.25),
                          PetInputs(image_node=image, pet=pet.suv), _outcome(pet))
    cam = ctx.scene.GetNodeByID(params.cam_volume)
    assert cam.GetName() == "pet Grad-CAM" and node_to_volume(cam).same_grid(pet.suv)
    display = cam.GetDisplayNode()
    assert display.GetColorNode().GetName() == HEAT_TABLE
    # the threshold and the window are the map's own values, not fractions of its peak: a map
    # weighted by a low P(recurrence) must stay dark
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.25)
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    for c in views:
        assert (c.GetBackgroundVolumeID(), c.GetForegroundVolumeID()) == (image.GetID(), cam.GetID())
        assert c.GetForegroundOpacity() == pytest.approx(0.3)
    rows = {r["quantity"]: r["value"] for r in table_rows(ctx.scene.GetNodeByID(params.results_table))}
    assert rows["P(recurrence)"] == "0.8" and rows["label"] == "recurrence" and rows["TBRmax"] == "2.5"
    assert rows["warning"] == "attention outside the brain"
    assert logic.get_parameters().summary["static"]["SUVmax"] == 3.2

    logic.set_cam_display(opacity=0.7, threshold=0.5)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.7) for c in views)
    assert display.GetLowerThreshold() == pytest.approx(0.5)
    assert logic.get_parameters().cam_opacity == pytest.approx(0.7)


def test_cam_off_the_pet_grid_adds_no_node(ctx, pet, node_ids):
    image = add_volume_node(ctx.scene, pet.suv, "pet")
    before = node_ids(ctx.scene)
    bad = _outcome(pet, _found_voi(pet))  # the VOI node is added before the map fails: removed again
    bad.cam = bad.cam.with_array(bad.cam.array, spacing=(9.0, 9.0, 9.0))
    with pytest.raises(InputError, match="Grad-CAM map is not on the PET grid"):
        PetRecurrenceLogic(ctx).finish(PetRecurrenceParameters(input_volume=image.GetID()), PetInputs(image_node=image, pet=pet.suv), bad)
    assert node_ids(ctx.scene) == before
    off = _outcome(pet, _found_voi(pet).with_array(_found_voi(pet).array, origin=(5.0, 5.0, 5.0)))
    with pytest.raises(InputError, match="lesion VOI is not on the PET grid"):
        PetRecurrenceLogic(ctx).finish(PetRecurrenceParameters(input_volume=image.GetID()), PetInputs(image_node=image, pet=pet.suv), off)
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
    # no VOI given: the one the engine found (1.6 x background) is a new segmentation node,
    # voxel for voxel the engine's mask (compute's outcome on the same inputs)
    assert s["static"]["lesion_voi"] == "threshold 1.6 x background"
    outcome = logic.compute(logic.prepare(params))
    assert outcome.lesion_mask is not None and outcome.lesion_mask.same_grid(pet.suv, atol=1e-4)
    voi = ctx.scene.GetNodeByID(params.lesion_voi)
    assert voi.GetName() == "pet lesion VOI"
    np.testing.assert_array_equal(segmentation_to_labels(voi, pet.suv).array > 0, outcome.lesion_mask.array > 0)
    # a second run with that VOI as the user's: the same figures, no further VOI node
    again = logic.run(PetRecurrenceParameters(input_volume=image.GetID(), brain_mask=brain.GetID(), lesion=voi.GetID(),
                                              units="suv", models=models, device="cpu"))
    assert again.lesion_voi is None and again.summary["static"]["lesion_voi"] == "user"
    assert again.summary["static"]["TBRmax"] == pytest.approx(s["static"]["TBRmax"], rel=1e-6)

    before = node_ids(ctx.scene)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        logic.run(PetRecurrenceParameters(input_volume=image.GetID(), units="suv", models=models, device="cpu"), cancel=token)
    assert node_ids(ctx.scene) == before


# ---------------------------------------------------------------------------- uptake units
# 72.5 kg, 187 MBq F-18, scan 1800 s after injection; by hand (SUVbw formula with decay):
HAND_FACTOR = 72.5 * 1000.0 / (187e6 * 2.0 ** (-1800.0 / 6586.2))
BIDS = {"Units": "Bq/mL", "BodyWeight": 72.5, "InjectedRadioactivity": 187, "InjectedRadioactivityUnits": "MBq",
        "TracerRadionuclide": "F18", "TimeZero": "09:12:30", "InjectionStart": 0, "ScanStart": 1800,
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 1800, "AttenuationCorrection": "CT-based"}
USER = {"weight_kg": 72.5, "injected_mbq": 187.0, "injection_time": "09:12:30", "scan_time": "09:42:30"}


def _bqml_nifti(folder, pet, name, sidecar=None):
    """The phantom's Bq/mL image as a NIfTI read by Slicer's own reader (no tags in its header)."""
    import json

    from clinicalai.volume import write_volume

    path = folder / f"{name}.nii.gz"
    write_volume(pet.image.with_array(pet.image.array, metadata={}), path)
    if sidecar is not None:
        (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return path


def test_uptake_is_suvbw_from_a_bids_sidecar_beside_a_nifti_slicer_read(ctx, pet, tmp_path):
    from clinicalai.mrml.volumes import load_volume_file

    node = load_volume_file(ctx, str(_bqml_nifti(tmp_path, pet, "sub-01_pet", BIDS)))
    logic = PetRecurrenceLogic(ctx)
    uptake = logic.uptake(PetRecurrenceParameters(input_volume=node.GetID()))  # units from the sidecar
    assert uptake.quantity == "SUVbw" and "2^(-(t_scan - t_inj) / T_half)" in uptake.label
    assert uptake.factor == pytest.approx(HAND_FACTOR, rel=1e-9)
    # the typed weight overrides the file's
    heavier = logic.uptake(PetRecurrenceParameters(input_volume=node.GetID(), weight_kg=145.0))
    assert heavier.factor == pytest.approx(2 * HAND_FACTOR, rel=1e-9)


def test_uptake_without_a_sidecar_needs_units_then_fields(ctx, pet, tmp_path):
    from clinicalai.mrml.volumes import load_volume_file

    node = load_volume_file(ctx, str(_bqml_nifti(tmp_path, pet, "scan")))
    logic = PetRecurrenceLogic(ctx)
    with pytest.raises(InputError, match="does not say its units.*choose Bq/mL or SUV"):
        logic.uptake(PetRecurrenceParameters(input_volume=node.GetID()))  # no default
    bqml = logic.uptake(PetRecurrenceParameters(input_volume=node.GetID(), units="bqml"))
    assert bqml.quantity == "Bq/mL" and bqml.factor == 1.0 and "PatientWeight" in bqml.label
    suv = logic.uptake(PetRecurrenceParameters(input_volume=node.GetID(), units="bqml", **USER))
    assert suv.quantity == "SUVbw" and suv.factor == pytest.approx(HAND_FACTOR, rel=1e-9)


def test_dicom_tags_travel_with_the_node(ctx, pet, tmp_path):
    from clinicalai.phantoms.pet import write_pet_dicom
    from clinicalai.volume import read_volume

    image = read_volume(write_pet_dicom(pet.image, tmp_path / "series"))
    node = add_volume_node(ctx.scene, image, "pet dicom")
    uptake = PetRecurrenceLogic(ctx).uptake(PetRecurrenceParameters(input_volume=node.GetID()))
    assert uptake.quantity == "SUVbw" and uptake.details["weight_kg"] == pet.image.metadata["pet"]["PatientWeight"]


@pytest.mark.parametrize("bad, message", [
    ({"weight_kg": -70.0}, "must be positive"),
    ({"injected_mbq": "lots"}, "must be a number"),
    ({"injection_time": "10:00", "scan_time": "09:00"}, "before the injection"),
])
def test_bad_typed_values_are_one_error_and_change_nothing(ctx, pet, tmp_path, node_ids, bad, message):
    from clinicalai.mrml.volumes import load_volume_file

    node = load_volume_file(ctx, str(_bqml_nifti(tmp_path, pet, "scan")))
    logic = PetRecurrenceLogic(ctx)
    before_params, before_nodes = logic.get_parameters(), node_ids(ctx.scene)
    params = PetRecurrenceParameters(input_volume=node.GetID(), units="bqml", **{**USER, **bad})
    with pytest.raises(InputError, match=message):
        logic.uptake(params)
    with pytest.raises(InputError, match=message):
        logic.run(params)
    assert node_ids(ctx.scene) == before_nodes and logic.get_parameters() == before_params


def test_end_to_end_bqml_is_labelled_and_suvbw_only_with_its_inputs(ctx, pet, pet_models, tmp_path):
    """The same Bq/mL NIfTI run without and with the typed weight, dose and times: P(recurrence)
    and TBR do not change; the peak is Bq/mL (never called SUV), then SUVbw = Bq/mL x the factor."""
    from clinicalai.mrml.volumes import load_volume_file

    pytest.importorskip("clinicalai.pet.workflow")
    node = load_volume_file(ctx, str(_bqml_nifti(tmp_path, pet, "scan")))
    logic = PetRecurrenceLogic(ctx)
    common = dict(input_volume=node.GetID(), units="bqml", models=pet_models, device="cpu", compute_cam=False)
    bqml = logic.run(PetRecurrenceParameters(**common)).summary
    assert bqml["uptake_quantity"] == "Bq/mL" and bqml["uptake"].startswith("Bq/mL (no SUV")
    assert "SUVmax" not in bqml["static"] and "background_SUVmean" not in bqml["static"]
    rows = {r["quantity"]: r["value"] for r in table_rows(ctx.scene.GetNodeByID(logic.get_parameters().results_table))}
    assert rows["uptake"].startswith("Bq/mL") and "max (Bq/mL)" in rows  # the key's label (clinicalai.labels)
    # no brain mask given: the warning says so in words for any front end (no CLI option in a panel)
    computed = [w for w in bqml["warnings"] if "brain mask computed" in w]
    assert computed and not any("--" in w for w in computed), bqml["warnings"]
    suv = logic.run(PetRecurrenceParameters(**common, **USER)).summary
    assert suv["uptake_quantity"] == "SUVbw" and suv["uptake"].startswith("SUVbw = C[Bq/mL] x weight[g]")
    assert suv["probability"] == pytest.approx(bqml["probability"], abs=1e-5)
    assert suv["static"]["TBRmax"] == pytest.approx(bqml["static"]["TBRmax"], rel=1e-4)
    assert suv["static"]["SUVmax"] == pytest.approx(bqml["static"]["max_Bq/mL"] * HAND_FACTOR, rel=1e-4)


def _run_with_window_10_30(ctx, logic, node, source, pet_models):
    """Run on ``node`` with the static window 10-30 min: ``(params, the one new node of that
    scan, static_from_dynamic(source))``, the node holding exactly the engine's static scan."""
    from clinicalai.pet.dynamic import static_from_dynamic

    params = logic.run(PetRecurrenceParameters(input_volume=node.GetID(), static_window="10-30", models=pet_models,
                                               device="cpu"))
    static = [n for n in ctx.scene.GetNodesByClass("vtkMRMLScalarVolumeNode") if n.GetName().endswith("static 10-30 min")]
    assert len(static) == 1
    expected = static_from_dynamic(source, (10, 30))
    np.testing.assert_allclose(node_to_volume(static[0]).array, expected.array, rtol=1e-6)
    return params, static[0], expected


def test_a_dynamic_pet_slicer_read_needs_a_static_window_and_gets_a_node_of_that_scan(ctx, pet, pet_models, tmp_path,
                                                                                    node_ids):
    """Slicer's reader keeps the first frame of a 4D NIfTI without a word: for a dynamic PET, the
    first minutes after the injection. The logic refuses that node unless a static window is
    given; with one it averages the file's frames and puts the result on a node of that scan."""
    import json

    import nibabel as nib

    from clinicalai.mrml.volumes import load_volume_file

    levels, starts, durations = (0.3, 0.7, 0.9, 1.1), [0, 300, 600, 1200], [300, 300, 600, 600]
    frames = np.stack([pet.image.array * level for level in levels], axis=-1).transpose(2, 1, 0, 3)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ pet.image.index_to_lps()  # LPS -> the RAS of NIfTI
    path = tmp_path / "sub-05_pet.nii.gz"
    nib.save(nib.Nifti1Image(frames.astype(np.float32), affine), path)
    (tmp_path / "sub-05_pet.json").write_text(json.dumps(dict(
        BIDS, InjectionStart=0, ScanStart=0, ImageDecayCorrectionTime=0, FrameTimesStart=starts, FrameDuration=durations)))
    node = load_volume_file(ctx, str(path))
    np.testing.assert_allclose(node_to_volume(node).array, pet.image.array * 0.3, rtol=1e-5)  # the first frame
    logic = PetRecurrenceLogic(ctx)
    before = node_ids(ctx.scene)
    with pytest.raises(InputError, match="shows the first of the 4 frames of the dynamic PET sub-05_pet.nii.gz"):
        logic.run(PetRecurrenceParameters(input_volume=node.GetID(), models=pet_models, device="cpu"))
    with pytest.raises(InputError, match="START-END"):
        logic.run(PetRecurrenceParameters(input_volume=node.GetID(), static_window="later", models=pet_models, device="cpu"))
    assert node_ids(ctx.scene) == before
    params, static, expected = _run_with_window_10_30(ctx, logic, node, path, pet_models)
    np.testing.assert_allclose(expected.array, pet.image.array, rtol=1e-5)  # 0.9 and 1.1 for 10 min each
    cam = ctx.scene.GetNodeByID(params.cam_volume)
    assert cam.GetName().startswith(static.GetName()) and node_to_volume(cam).same_grid(expected, atol=1e-4)
    assert params.summary["static"]["SUVmax"] > 0
    # slicer-core's reader put the first frame on an axis-aligned grid (the file is rotated 15
    # degrees): the result is on the file's grid, and says so
    assert not node_to_volume(node).same_grid(expected, atol=1e-4)
    assert any("not on the grid of sub-05_pet.nii.gz" in w for w in params.summary["warnings"])


@pytest.fixture(scope="module")
def dynamic_series(pet, tmp_path_factory):
    """The PET as a dynamic DICOM series of 4 frames (0.3, 0.7, 0.9 and 1.1 x the PET; 0-5, 5-10,
    10-20 and 20-30 min), as a scanner exports it: ``(folder, [[(instance UID, file)] per frame])``,
    frames in time order. Its window 10-30 min is the PET itself."""
    import datetime as dt

    import pydicom

    from clinicalai.phantoms.pet import pet_tags, write_dynamic_pet_dicom

    injection = dt.datetime(2024, 5, 6, 9, 0, 0)
    levels, starts, durations = (0.3, 0.7, 0.9, 1.1), [0, 300, 600, 1200], [300, 300, 600, 600]
    frames = [pet.image.with_array((pet.image.array * v).astype(np.float32), metadata={}) for v in levels]
    folder = write_dynamic_pet_dicom(frames, starts, durations, pet_tags(70.0, 185e6, injection, injection),
                                     tmp_path_factory.mktemp("dynamic") / "series")
    by_start = {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_start.setdefault(str(ds.AcquisitionTime), []).append((str(ds.SOPInstanceUID), str(f)))
    return folder, [by_start[t] for t in sorted(by_start)]


class _DicomDatabase:
    """What PetRecurrence asks desktop Slicer's ``slicer.dicomDatabase``: the file of an instance
    UID (slicer-core has no ctkDICOMDatabase; this is its lookup table, nothing more)."""

    def __init__(self, files):
        self.files = files

    def fileForInstance(self, uid):  # noqa: N802 - ctkDICOMDatabase's name
        return self.files.get(uid, "")


def test_a_sequence_of_dicom_frames_needs_a_window_and_averages_the_series_files(ctx, pet, pet_models, dynamic_series,
                                                                                node_ids, monkeypatch):
    """A dynamic series loaded by Slicer's DICOM module is a sequence; its proxy node shows the
    frame browsed to, never the static scan. Without a window the logic says which frame of how
    many it shows; with one it averages the series' files (found through the DICOM database),
    as the command line does; without the database it says why it cannot, and adds nothing."""
    import slicer

    from clinicalai.volume import read_volume

    folder, frames = dynamic_series
    proxy = browsed_sequence(ctx, [read_volume(folder, frame=k) for k in range(len(frames))], "dynamic PET", 2,
                             [{"DICOM.instanceUIDs": " ".join(uid for uid, _ in frame)} for frame in frames])
    files = {uid: f for frame in frames for uid, f in frame}
    step = 1.1 * pet.image.array.max() / 32767  # a frame's int16 step (its Rescale Slope)
    np.testing.assert_allclose(node_to_volume(proxy).array, pet.image.array * 0.9, atol=step)  # the third frame
    logic = PetRecurrenceLogic(ctx)
    before = node_ids(ctx.scene)
    with pytest.raises(InputError, match="shows frame 3 of the 4 frames of the sequence 'dynamic PET': give a static"):
        logic.run(PetRecurrenceParameters(input_volume=proxy.GetID(), models=pet_models, device="cpu"))
    monkeypatch.delattr(slicer, "dicomDatabase", raising=False)
    with pytest.raises(InputError, match="cannot be averaged here: a static window needs each frame's start and dur"):
        logic.run(PetRecurrenceParameters(input_volume=proxy.GetID(), static_window="10-30", models=pet_models,
                                          device="cpu"))
    assert node_ids(ctx.scene) == before
    monkeypatch.setattr(slicer, "dicomDatabase", _DicomDatabase(files), raising=False)
    params, static, expected = _run_with_window_10_30(ctx, logic, proxy, folder, pet_models)
    np.testing.assert_allclose(expected.array, pet.image.array, atol=2 * step)  # 0.9 and 1.1 for 10 min each
    assert node_to_volume(static).same_grid(pet.image, atol=1e-4)  # oblique: the series' own grid
    assert params.summary["static"]["SUVmax"] > 0


def test_a_multi_volume_of_dicom_frames_is_averaged_with_a_window_and_refused_elsewhere(ctx, pet, pet_models,
                                                                                     dynamic_series, node_ids,
                                                                                     monkeypatch):
    """Slicer's MultiVolumeImporter (the DICOM module's default for a dynamic series) makes one
    node whose voxels hold every frame as a component, with ``MultiVolume.NumberOfFrames`` and
    every file's ``DICOM.instanceUIDs``. slicer-core has no vtkMRMLMultiVolumeNode: the node here
    is its base class with what the importer writes on it. PetRecurrence asks for a window, then
    averages the series' files; SegCorrect says what the node is and what to do instead."""
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    from clinicalai.mrml.segcorrect_logic import SegCorrectLogic, SegCorrectParameters
    from clinicalai.mrml.volumes import add_volume_node
    from clinicalai.volume import read_volume

    folder, frames = dynamic_series
    first = read_volume(folder, frame=0)
    node = add_volume_node(ctx.scene, first, "dynamic PET multi-volume")
    stacked = np.stack([read_volume(folder, frame=k).array for k in range(len(frames))], axis=-1)  # (z, y, x, frame)
    image = vtk.vtkImageData()
    image.SetDimensions(*node.GetImageData().GetDimensions())
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(stacked.reshape(-1, len(frames)).astype(np.float32), deep=True))
    node.SetAndObserveImageData(image)
    node.SetAttribute("MultiVolume.NumberOfFrames", str(len(frames)))
    node.SetAttribute("DICOM.instanceUIDs", " ".join(uid for frame in frames for uid, _ in frame))
    logic = PetRecurrenceLogic(ctx)
    before = node_ids(ctx.scene)
    with pytest.raises(InputError, match="holds all 4 frames of the multi-volume 'dynamic PET multi-volume': give a "
                                         "static window"):
        logic.run(PetRecurrenceParameters(input_volume=node.GetID(), models=pet_models, device="cpu"))
    with pytest.raises(InputError, match="is a multi-volume of 4 frames .*load the series as a volume sequence"):
        SegCorrectLogic(ctx).run(SegCorrectParameters(input_volume=node.GetID(), correct=False))
    assert node_ids(ctx.scene) == before
    monkeypatch.setattr(slicer, "dicomDatabase", _DicomDatabase({uid: f for frame in frames for uid, f in frame}),
                        raising=False)
    params, static, _ = _run_with_window_10_30(ctx, logic, node, folder, pet_models)
    assert static.GetName() == "dynamic PET multi-volume static 10-30 min"
    assert node_to_volume(static).same_grid(first, atol=1e-4) and params.summary["static"]["SUVmax"] > 0


def test_a_sequence_slicer_read_from_a_seq_nrrd_says_why_no_window_can_be_averaged(ctx, pet, pet_models, tmp_path,
                                                                                  node_ids):
    """A dynamic PET saved from Slicer's Sequences module (``.seq.nrrd``) and read back by
    slicer-core's own ``vtkMRMLVolumeSequenceStorageNode``: its index values are frame numbers or
    starts, never durations or decay correction, so the logic asks for a window, then says that
    file cannot give one, naming it; the scene is unchanged."""
    sequence = sequence_of(ctx.scene, [pet.image.with_array(pet.image.array * level) for level in (0.5, 1.0)],
                           "dynamic PET")
    storage = ctx.scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(tmp_path / "dynamic.seq.nrrd"))
    assert storage.WriteData(sequence) == 1
    read = ctx.scene.AddNewNodeByClass("vtkMRMLSequenceNode", "dynamic PET read")
    read.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(read) == 1 and read.GetNumberOfDataNodes() == 2
    proxy = browse(ctx, read)
    before = node_ids(ctx.scene)
    pet_logic = PetRecurrenceLogic(ctx)
    with pytest.raises(InputError, match="shows the first of the 2 frames of the sequence 'dynamic PET read' "
                                         r"\(from dynamic.seq.nrrd\): give a static window"):
        pet_logic.run(PetRecurrenceParameters(input_volume=proxy.GetID(), models=pet_models, device="cpu"))
    with pytest.raises(InputError, match=r"the frames of the sequence 'dynamic PET read' \(from dynamic.seq.nrrd\) "
                                         "cannot be averaged here"):
        pet_logic.run(PetRecurrenceParameters(input_volume=proxy.GetID(), static_window="10-30", models=pet_models,
                                              device="cpu"))
    assert node_ids(ctx.scene) == before

"""Issue #16 item 2 on a real MRML scene: a file opened "as" image / label map / segmentation
(guessed from its content or chosen), masks attached to the image whose grid they share, and
the mask choosers offering only the masks of the image on show."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.mrml.masks import (
    ContentSummary,
    OPEN_AS_IMAGE,
    OPEN_AS_LABELMAP,
    OPEN_AS_SEGMENTATION,
    attached_image,
    content_summary,
    guess_open_as,
    mask_chooser_note,
    masks_for_image,
    open_file_as,
    resolve_open_as,
)
from clinicalai.mrml.volumes import node_to_volume
from clinicalai.volume import Volume, write_volume


# ---------------------------------------------------------------------- the pure guess
def test_guess_reads_the_content():
    image = content_summary(np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32))
    assert not image.integral and guess_open_as(image, True).kind == OPEN_AS_IMAGE
    binary_float = content_summary(np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32))
    assert binary_float == ContentSummary("float32", True, 2)
    assert guess_open_as(binary_float, True).kind == OPEN_AS_LABELMAP
    assert guess_open_as(binary_float, None).kind == OPEN_AS_LABELMAP  # no image open: still a mask
    ct = content_summary(np.arange(-1000, 1000, dtype=np.int16).reshape(10, 10, 20))
    assert ct.distinct_values == 65 and guess_open_as(ct, True).kind == OPEN_AS_IMAGE
    cardiac = ContentSummary("uint8", True, 4)
    assert guess_open_as(cardiac, False).kind == OPEN_AS_LABELMAP  # on another grid: a mask, not the image
    assert guess_open_as(cardiac, None).kind == OPEN_AS_IMAGE  # nothing to lie on, not binary
    assert "grid" in guess_open_as(cardiac, True).reason


def test_the_users_choice_overrides_the_guess_and_is_checked():
    guess = guess_open_as(ContentSummary("uint8", True, 2), True)
    assert resolve_open_as("", guess) == OPEN_AS_LABELMAP
    assert resolve_open_as(OPEN_AS_IMAGE, guess) == OPEN_AS_IMAGE
    assert resolve_open_as(OPEN_AS_SEGMENTATION, guess) == OPEN_AS_SEGMENTATION
    assert resolve_open_as("", guess, segmentation_file=True) == OPEN_AS_SEGMENTATION
    for bad, kwargs in (("volume", {}), (["image"], {}), (OPEN_AS_LABELMAP, {"series": True}), (OPEN_AS_IMAGE, {"segmentation_file": True})):
        with pytest.raises(InputError):
            resolve_open_as(bad, guess, **kwargs)


# ---------------------------------------------------------------------- files on a scene
@pytest.fixture
def files(tmp_path):
    """A brain-like image, its lesion (0/1 float NIfTI, as many tools write masks) and a
    4-label mask on another grid (a cardiac mask)."""
    rng = np.random.default_rng(1)
    brain = Volume(rng.normal(size=(12, 16, 14)).astype(np.float32), spacing=(2.0, 2.0, 2.5), origin=(-14.0, -16.0, -15.0))
    lesion = np.zeros(brain.shape, np.float32)
    lesion[4:7, 5:9, 6:9] = 1
    heart = Volume(np.zeros((5, 20, 22), np.uint8), spacing=(1.25, 1.25, 6.0), origin=(-10.0, -12.0, -15.0))
    heart.array[1:4, 5:15, 6:16] = 1
    heart.array[2, 8:12, 9:13] = 3
    heart.array[1, 6:8, 6:8] = 2
    paths = {"brain": tmp_path / "brain.nii.gz", "lesion": tmp_path / "lesion.nii.gz", "heart": tmp_path / "heart.nii.gz",
             "heart_seg": tmp_path / "heart.seg.nrrd", "lesion_seg": tmp_path / "lesion2.seg.nrrd"}
    write_volume(brain, paths["brain"])
    write_volume(brain.with_array(lesion), paths["lesion"])
    write_volume(heart, paths["heart"])
    write_volume(heart, paths["heart_seg"], segments=[{"name": n, "value": v} for n, v in (("RV", 1), ("MYO", 2), ("LV", 3))])
    write_volume(brain.with_array(lesion.astype(np.uint8)), paths["lesion_seg"], segments=[{"name": "lesion", "value": 1}])
    return paths


def test_a_mask_is_attached_to_its_image_and_never_replaces_it(ctx, files):
    scene = ctx.scene
    brain = open_file_as(ctx, files["brain"])
    assert brain.kind == OPEN_AS_IMAGE and brain.node.IsA("vtkMRMLScalarVolumeNode") and "fractional" in brain.message
    lesion = open_file_as(ctx, files["lesion"], current=brain.node)
    assert lesion.kind == OPEN_AS_LABELMAP and lesion.node.IsA("vtkMRMLLabelMapVolumeNode")
    assert lesion.image is brain.node and attached_image(lesion.node) is brain.node
    assert "of brain" in lesion.message and "guessed" in lesion.message
    # the mask's voxels and geometry as in the file (0/1 float became whole-number labels)
    back = node_to_volume(lesion.node)
    assert back.same_grid(node_to_volume(brain.node), atol=1e-4) and back.array.dtype == np.uint8
    assert int(back.array.sum()) == 3 * 4 * 3
    # a cardiac mask on no open image's grid: a mask all the same, and the message says so
    heart = open_file_as(ctx, files["heart"], current=brain.node)
    assert heart.kind == OPEN_AS_LABELMAP and heart.image is None and attached_image(heart.node) is None
    assert "no open image's grid" in heart.message and "22 x 20 x 5 voxels" in heart.message
    # the .seg.nrrd of the heart: a segmentation, on its own grid, not the brain's
    heart_seg = open_file_as(ctx, files["heart_seg"], current=brain.node)
    assert heart_seg.kind == OPEN_AS_SEGMENTATION and heart_seg.image is None
    # chosen: the lesion as a segmentation, attached too
    lesion_seg = open_file_as(ctx, files["lesion"], OPEN_AS_SEGMENTATION, current=brain.node)
    assert lesion_seg.node.IsA("vtkMRMLSegmentationNode") and lesion_seg.image is brain.node and "as chosen" in lesion_seg.message
    lesion_file_seg = open_file_as(ctx, files["lesion_seg"], current=brain.node)
    assert lesion_file_seg.image is brain.node

    offered, others = masks_for_image(scene, brain.node)
    ids = {n.GetID() for n in offered}
    assert ids == {lesion.node.GetID(), lesion_seg.node.GetID(), lesion_file_seg.node.GetID()}
    assert {n.GetID() for n in others} == {heart.node.GetID(), heart_seg.node.GetID()}
    assert "2 on another image's grid not offered" in mask_chooser_note(brain.node, offered, others)

    # the image opened on the heart's grid then offers the heart masks, not the brain's
    heart_image = open_file_as(ctx, files["heart"], OPEN_AS_IMAGE, current=brain.node)
    assert heart_image.kind == OPEN_AS_IMAGE and heart_image.node.IsA("vtkMRMLScalarVolumeNode")
    assert not heart_image.node.IsA("vtkMRMLLabelMapVolumeNode")
    offered, others = masks_for_image(scene, heart_image.node)
    assert {n.GetID() for n in offered} == {heart.node.GetID(), heart_seg.node.GetID()}
    assert "no mask" in mask_chooser_note(brain.node, [], others)


def test_a_refused_choice_leaves_the_scene_as_it_was(ctx, files, node_ids):
    brain = open_file_as(ctx, files["brain"])
    before = node_ids(ctx.scene)
    with pytest.raises(InputError, match="fractional"):
        open_file_as(ctx, files["brain"], OPEN_AS_LABELMAP, current=brain.node)
    with pytest.raises(InputError, match="segmentation"):
        open_file_as(ctx, files["heart_seg"], OPEN_AS_IMAGE, current=brain.node)
    assert node_ids(ctx.scene) == before


def test_a_segmentation_added_without_a_reference_is_matched_by_its_voxels(ctx, files):
    """A .seg.nrrd opened by Slicer's "Add data" (desktop): no reference geometry, labelmaps
    possibly cropped; it is offered for the image whose voxels it lies on, and only for it."""
    from clinicalai.mrml.segmentations import load_segmentation_file

    brain = open_file_as(ctx, files["brain"]).node
    heart = open_file_as(ctx, files["heart"], OPEN_AS_IMAGE).node
    lesion = load_segmentation_file(ctx, str(files["lesion_seg"]), name="added lesion")
    heart_seg = load_segmentation_file(ctx, str(files["heart_seg"]), name="added heart")
    assert masks_for_image(ctx.scene, brain)[0] == [lesion]
    assert masks_for_image(ctx.scene, heart)[0] == [heart_seg]


# ---------------------------------------------------------------------- the desktop choosers
class _ProxyModel:
    """Stands in for ``qMRMLSortFilterProxyModel`` (its ``hiddenNodeIDs`` property)."""

    hiddenNodeIDs: list = []


class _NodeComboBox:
    """Stands in for a ``qMRMLNodeComboBox`` (desktop Qt cannot run here)."""

    def __init__(self, current=None):
        self.proxy, self.current, self.noneDisplay = _ProxyModel(), current, "None"

    def sortFilterProxyModel(self):
        return self.proxy

    def currentNode(self):
        return self.current

    def setCurrentNode(self, node):
        self.current = node


def test_desktop_mask_chooser_hides_the_masks_of_other_grids(ctx, files):
    from clinicalai.desktop import restrict_mask_selector

    brain = open_file_as(ctx, files["brain"]).node
    lesion = open_file_as(ctx, files["lesion"], current=brain).node
    heart = open_file_as(ctx, files["heart"], current=brain).node
    selector = _NodeComboBox(current=heart)  # chosen before the input changed
    note = restrict_mask_selector(selector, ctx.scene, brain)
    assert selector.proxy.hiddenNodeIDs == [heart.GetID()] and lesion.GetID() not in selector.proxy.hiddenNodeIDs
    assert selector.current is None, "a mask of another grid is no longer the choice"
    assert selector.noneDisplay == "None" and "1 on another image's grid" in note
    empty = _NodeComboBox(current=lesion)
    restrict_mask_selector(empty, ctx.scene, None)  # no input volume: nothing is offered, and it says why
    assert set(empty.proxy.hiddenNodeIDs) == {lesion.GetID(), heart.GetID()} and empty.current is None
    assert empty.noneDisplay.startswith("None (no image open")


def test_mask_selectors_named_by_the_widgets_exist_in_their_ui():
    import ast
    import xml.etree.ElementTree as ET
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for module in ("PetRecurrence", "AttributionViewer", "SegCorrect"):
        tree = ast.parse((root / module / f"{module}.py").read_text(encoding="utf-8"))
        (names,) = [ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "maskSelectors" for t in n.targets)]
        widgets = {w.get("name"): w for w in ET.parse(root / module / "Resources" / "UI" / f"{module}.ui").iter("widget")}
        assert names and all(widgets[n].get("class") == "qMRMLNodeComboBox" for n in names), module
        for n in names:  # label maps and segmentations, "None" allowed (its text says why it is alone)
            props = {p.get("name"): p for p in widgets[n].findall("property")}
            assert [s.text for s in props["nodeTypes"].iter("string")] == ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"]
            assert props["noneEnabled"].findtext("bool") == "true"


def test_panel_mixin_filters_its_mask_choosers_on_input_change_and_node_added(ctx, files):
    """The desktop widgets' path: a new input volume, and a mask added to the scene later (Add
    data), re-filter the choosers named in ``maskSelectors``."""
    import types

    from slicer.util import VTKObservationMixin
    from test_mrml_panels import _ParameterNodeWrapper

    from clinicalai.desktop import PanelWidgetMixin
    from clinicalai.mrml.headless import install_slicer_stand_ins
    from clinicalai.mrml.parameters import get_parameter_node

    install_slicer_stand_ins(ctx)  # slicer.mrmlScene is this scene
    node = get_parameter_node(ctx.scene, "MaskDemo")
    node.RemoveNodeReferenceIDs("inputVolume")
    brain = open_file_as(ctx, files["brain"]).node
    heart = open_file_as(ctx, files["heart"], OPEN_AS_IMAGE).node
    heart_mask = open_file_as(ctx, files["heart"], OPEN_AS_LABELMAP, current=heart).node
    deferred = []

    class Widget(PanelWidgetMixin, VTKObservationMixin):
        maskSelectors = ("lesionSelector",)

        def __init__(self):
            VTKObservationMixin.__init__(self)
            self.ui = types.SimpleNamespace(lesionSelector=_NodeComboBox(), applyButton=types.SimpleNamespace(enabled=False))
            self.logic = types.SimpleNamespace(getParameterNode=lambda: _ParameterNodeWrapper(node))
            self.observeMasks(deferred.append)

        def _showLastResult(self):
            pass

    widget = Widget()
    widget.setParameterNode(widget.logic.getParameterNode())
    widget._parameterNode.inputVolume = heart
    assert widget.ui.lesionSelector.proxy.hiddenNodeIDs == []
    widget._parameterNode.inputVolume = brain  # another input: the heart's mask is hidden
    assert widget.ui.lesionSelector.proxy.hiddenNodeIDs == [heart_mask.GetID()]
    assert "no mask on the grid of brain" in widget.ui.lesionSelector.noneDisplay
    lesion = open_file_as(ctx, files["lesion"], current=brain).node  # added later: filtered once loaded
    assert deferred, "a node added to the scene asks for the choosers to be filtered again"
    for call in deferred:
        call()
    assert widget.ui.lesionSelector.proxy.hiddenNodeIDs == [heart_mask.GetID()] and widget.ui.lesionSelector.noneDisplay == "None"
    assert lesion.GetID() not in widget.ui.lesionSelector.proxy.hiddenNodeIDs
    widget.cleanup()


def test_a_dicom_seg_of_some_slices_opens_as_a_segmentation_of_its_series(ctx, tmp_path):
    """A DICOM SEG holding only its segmented slices (as PACS-side tools write one) opens as a
    segmentation of the open DICOM series whose voxels it lies on, with its segment names, and
    its labels land on that series' grid voxel for voxel."""
    import warnings

    from scipy.spatial.transform import Rotation

    from clinicalai.mrml.segmentations import segmentation_to_labels
    from clinicalai.volume.dicom_seg import write_dicom_seg
    from clinicalai.volume.dicom_writer import write_dicom_series

    rotation = Rotation.from_euler("xyz", [20.0, -30.0, 50.0], degrees=True).as_matrix()
    ct = Volume(np.random.default_rng(2).integers(-500, 500, (7, 12, 10)).astype(np.int16), spacing=(0.8, 1.1, 4.0),
                origin=(-5.0, 12.0, 30.0), direction=rotation, modality="CT")
    folder = write_dicom_series(ct, tmp_path / "ct")
    image = open_file_as(ctx, folder)
    labels = np.zeros(ct.shape, np.uint8)
    labels[2:5, 3:9, 2:8] = 1
    labels[3, 5:7, 4:6] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom questions the series writer's one-word patient name
        seg_path = write_dicom_seg(node_to_volume(image.node).with_array(labels), sorted(folder.iterdir()),
                                   tmp_path / "seg.dcm", [{"name": "lesion", "value": 1}, {"name": "core", "value": 2}])
    opened = open_file_as(ctx, seg_path, current=image.node)
    assert opened.kind == OPEN_AS_SEGMENTATION and opened.image is image.node and "of ct" in opened.message
    back = segmentation_to_labels(opened.node, node_to_volume(image.node))
    assert [s["name"] for s in back.metadata["segments"]] == ["lesion", "core"]
    np.testing.assert_array_equal(back.array, labels)
    with pytest.raises(InputError, match="opens as a segmentation"):
        open_file_as(ctx, seg_path, OPEN_AS_IMAGE, current=image.node)


def test_a_time_point_of_a_4d_file_opens_as_an_image_on_that_frame_s_grid(ctx, tmp_path):
    """A cine stored as one 4D NIfTI (ACDC's ``_4d.nii.gz``): Slicer's reader would take one
    frame of its own choosing; ``frame`` opens the one asked for, on its oblique geometry, and a
    mask of that grid attaches to it. Without a frame it is refused, naming the time points."""
    import nibabel as nib
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [15.0, -25.0, 40.0], degrees=True).as_matrix() @ np.diag([1.4, 1.4, 8.0])
    affine[:3, 3] = (-30.0, 12.0, 55.0)
    frames = np.random.default_rng(4).normal(100, 20, (12, 10, 5, 3)).astype(np.float32)
    frames[..., 2] += 500.0  # the last time point is the bright one
    nib.save(nib.Nifti1Image(frames, affine), tmp_path / "cine_4d.nii.gz")
    nib.save(nib.Nifti1Image(frames[..., 2], affine), tmp_path / "frame2.nii.gz")
    before = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="4D image with 3 time points"):
        open_file_as(ctx, tmp_path / "cine_4d.nii.gz")
    assert ctx.scene.GetNumberOfNodes() == before
    opened = open_file_as(ctx, tmp_path / "cine_4d.nii.gz", frame=2)
    assert opened.kind == OPEN_AS_IMAGE and opened.node.GetName() == "cine_4d_frame2"
    shown, alone = node_to_volume(opened.node), Volume.from_sitk(__import__("SimpleITK").ReadImage(str(tmp_path / "frame2.nii.gz")))
    assert shown.same_grid(alone) and np.allclose(shown.array, alone.array) and shown.array.mean() > 500
    mask = alone.with_array((alone.array > 600).astype(np.uint8))
    write_volume(mask, tmp_path / "mask.nii.gz")
    attached = open_file_as(ctx, tmp_path / "mask.nii.gz", OPEN_AS_LABELMAP, current=opened.node)
    assert attached.image is opened.node


def test_a_dynamic_pet_opens_as_the_static_scan_of_a_window_with_its_suv_inputs(ctx, tmp_path):
    """A dynamic BIDS-PET (frames decay-corrected, times in its sidecar): ``static_window``
    opens the duration-weighted mean of the whole frames in it, on the file's oblique grid,
    with the sidecar's PET tags on the node; a window without a whole frame changes nothing."""
    import json

    import nibabel as nib
    from scipy.spatial.transform import Rotation

    from clinicalai.mrml.volumes import PET_TAGS_ATTRIBUTE

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [10.0, 20.0, -35.0], degrees=True).as_matrix() @ np.diag([2.0, 2.5, 3.3])
    affine[:3, 3] = (-80.0, -100.0, -40.0)
    frames = np.random.default_rng(5).uniform(1000, 2000, (9, 8, 6, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(frames, affine), tmp_path / "sub-04_pet.nii.gz")
    (tmp_path / "sub-04_pet.json").write_text(json.dumps({
        "Units": "Bq/mL", "BodyWeight": 70, "InjectedRadioactivity": 180, "InjectedRadioactivityUnits": "MBq",
        "TracerRadionuclide": "F18", "TimeZero": "08:00:00", "InjectionStart": 0, "ScanStart": 0,
        "FrameTimesStart": [0, 600, 1200], "FrameDuration": [600, 600, 1200], "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0, "AttenuationCorrection": "CT-based"}))
    nib.save(nib.Nifti1Image(frames[..., 0], affine), tmp_path / "frame0.nii.gz")
    before = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="no whole frame lies in 12-18 min"):
        open_file_as(ctx, tmp_path / "sub-04_pet.nii.gz", static_window=(12, 18))
    assert ctx.scene.GetNumberOfNodes() == before
    opened = open_file_as(ctx, tmp_path / "sub-04_pet.nii.gz", static_window=(10, 40))
    assert opened.kind == OPEN_AS_IMAGE and opened.node.GetName() == "sub-04_pet_static10-40min"
    assert "mean of frames 1-2, 10.0-40.0 min after injection" in opened.message
    shown = node_to_volume(opened.node)
    alone = Volume.from_sitk(__import__("SimpleITK").ReadImage(str(tmp_path / "frame0.nii.gz")))
    assert shown.same_grid(alone)
    expected = (frames[..., 1] * 600 + frames[..., 2] * 1200) / 1800  # x, y, z as nibabel holds them
    np.testing.assert_allclose(shown.array, expected.transpose(2, 1, 0), rtol=1e-5)
    assert json.loads(opened.node.GetAttribute(PET_TAGS_ATTRIBUTE))["PatientWeight"] == 70

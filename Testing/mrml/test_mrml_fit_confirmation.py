"""A run on an input that does not fit the model asks first (issue 16 item 6): the logics'
``prepare`` refuses with :class:`FitNotConfirmed` (problems named, scene unchanged) unless
the parameters carry ``confirmed_fit=True``, which is never stored in the scene; a
confirmed run reports the accepted problems once among its warnings."""

import numpy as np
import pytest

from clinicalai.errors import FitNotConfirmed, InputError
from clinicalai.mrml.attribution_logic import AttributionViewerLogic, AttributionViewerParameters
from clinicalai.mrml.pet_logic import PetRecurrenceLogic, PetRecurrenceParameters
from clinicalai.mrml.segcorrect_logic import SegCorrectLogic, SegCorrectParameters
from clinicalai.mrml.volumes import add_volume_node
from clinicalai.phantoms.brain import brain_case

#: a segmenter made for CT (the bundled biliary-duct model) given a brain MR
CT_SEGMENTER = "ct-ducts-unet3d"


@pytest.fixture(scope="module")
def brain():
    """A tiny brain MR phantom (modality MR) and its binary brain mask."""
    return brain_case(1, shape=(8, 24, 24), spacing=(4.0, 4.0, 4.0))


def _count(scene):
    return scene.GetNumberOfNodes()


def test_segcorrect_refuses_a_brain_mr_for_a_ct_model_without_confirmation(ctx, brain):
    logic = SegCorrectLogic(ctx)
    node = add_volume_node(ctx.scene, brain.image, "brain")
    params = SegCorrectParameters(input_volume=node.GetID(), segmenter_model=CT_SEGMENTER, correct=False)
    before = _count(ctx.scene)
    with pytest.raises(FitNotConfirmed) as err:
        logic.run(params)
    assert _count(ctx.scene) == before
    assert [p.code for p in err.value.problems] == ["modality"]
    assert isinstance(err.value, InputError)  # the GUIs' one-dialog path still catches it
    assert "is MR but model ct-ducts-unet3d was made for CT" in str(err.value)


def test_confirmed_segcorrect_run_goes_on_and_reports_the_problem_once(ctx, brain):
    logic = SegCorrectLogic(ctx)
    node = add_volume_node(ctx.scene, brain.image, "brain")
    params = SegCorrectParameters(input_volume=node.GetID(), segmenter_model=CT_SEGMENTER, correct=False,
                                  confirmed_fit=True)
    out = logic.run(params)
    assert out.output_segmentation and ctx.scene.GetNodeByID(out.output_segmentation) is not None
    misfit = [w for w in out.warnings if "was made for CT" in w]
    assert len(misfit) == 1, out.warnings
    # the "run anyway" is for that run only: the scene does not keep it, the next run asks again
    assert logic.get_parameters().confirmed_fit is False
    assert logic.get_parameters().warnings == out.warnings
    with pytest.raises(FitNotConfirmed):
        logic.prepare(logic.get_parameters())


def test_a_client_flag_in_the_parameter_node_does_not_confirm(ctx, brain):
    """``confirmed_fit`` written into the node by hand (a scene file, a script) is not read."""
    logic = SegCorrectLogic(ctx)
    node = add_volume_node(ctx.scene, brain.image, "brain")
    logic.set_parameters(SegCorrectParameters(input_volume=node.GetID(), segmenter_model=CT_SEGMENTER, correct=False))
    logic.parameter_node().SetParameter("confirmed_fit", "true")
    with pytest.raises(FitNotConfirmed):
        logic.prepare(logic.get_parameters())


def test_pet_logic_refuses_a_binary_mask_volume(ctx, brain, pet_models):
    logic = PetRecurrenceLogic(ctx)
    mask = brain.brain_mask.with_array(brain.brain_mask.array.astype(np.float32), modality=None, units=None)
    node = add_volume_node(ctx.scene, mask, "brain mask as PET")
    before = _count(ctx.scene)
    params = PetRecurrenceParameters(input_volume=node.GetID(), units="suv", models=list(pet_models))
    with pytest.raises(FitNotConfirmed) as err:
        logic.run(params)
    assert _count(ctx.scene) == before
    assert "binary" in [p.code for p in err.value.problems]
    assert "a mask or label map" in str(err.value)
    params.confirmed_fit = True
    inputs = logic.prepare(params)
    assert any("a mask or label map" in w for w in inputs.fit_warnings)


def test_attribution_logic_refuses_an_mr_anomaly_model_on_a_pet(ctx):
    from clinicalai.phantoms.pet import pet_case

    pet = pet_case(2, recurrence=False).suv
    logic = AttributionViewerLogic(ctx)
    node = add_volume_node(ctx.scene, pet, "pet")
    assert pet.modality == "PT"
    params = AttributionViewerParameters(input_volume=node.GetID(), anomaly_model="brain-ae-anomaly", methods=[])
    with pytest.raises(FitNotConfirmed, match="is PT but model brain-ae-anomaly was made for MR"):
        logic.prepare(params)
    params.confirmed_fit = True
    assert logic.prepare(params).fit_warnings


def test_a_fitting_input_runs_without_asking(ctx, pet_models):
    """The PET phantom and fold models without a modality in their card: nothing to confirm."""
    from clinicalai.phantoms.pet import pet_case

    pet = pet_case(2, recurrence=False).suv
    node = add_volume_node(ctx.scene, pet, "pet")
    inputs = PetRecurrenceLogic(ctx).prepare(PetRecurrenceParameters(input_volume=node.GetID(), units="suv",
                                                                      models=list(pet_models)))
    assert inputs.fit_warnings == ()


# ----------------------------------------------------------------------------- desktop: one question, then the run
def _desktop_apply(ctx, params, answers):
    """SegCorrect's Apply as the desktop widget does it (PanelRunner.start_checked), the
    OK / Cancel question answered from ``answers``; ``(questions, done runs, runner)``."""
    import dataclasses
    import threading

    from slicer_stand_ins import PanelTimer, panel_ui

    from clinicalai import desktop
    from clinicalai.mrml.runner import BackgroundRun

    logic, questions, done = SegCorrectLogic(ctx), [], []
    runner = desktop.PanelRunner("SegCorrect", panel_ui(), confirm=lambda q: questions.append(q) or answers.pop(0),
                                 show_error=lambda message, details: pytest.fail(message))
    make_run = lambda confirmed: BackgroundRun(logic, dataclasses.replace(params, confirmed_fit=confirmed))  # noqa: E731
    timer = PanelTimer()
    if runner.start_checked(make_run, done.append, timer):
        for _ in range(12000):
            if timer.tick():
                break
            threading.Event().wait(0.01)
    return questions, done, runner


def test_desktop_cancel_changes_nothing_and_ok_runs_with_the_warning(ctx, brain):
    node = add_volume_node(ctx.scene, brain.image, "brain")
    params = SegCorrectParameters(input_volume=node.GetID(), segmenter_model=CT_SEGMENTER, correct=False)
    before = _count(ctx.scene)
    questions, done, runner = _desktop_apply(ctx, params, [False])
    assert len(questions) == 1 and "was made for CT" in questions[0]
    assert done == [] and _count(ctx.scene) == before and not runner.running
    assert runner.ui.statusLabel.text == "Not run; nothing was changed."
    questions, done, runner = _desktop_apply(ctx, params, [True])
    assert len(questions) == 1 and len(done) == 1
    assert any("was made for CT" in w for w in done[0].params.warnings)
    assert _count(ctx.scene) > before


def test_a_node_slicer_read_from_a_4d_file_asks_first_naming_the_time_points(ctx, tmp_path):
    """Slicer's reader keeps the first time point of a 4D NIfTI (a cine as ACDC ships it) without
    a word: SegCorrect asks before segmenting that one, naming the file's time points."""
    import nibabel as nib

    from clinicalai.mrml.volumes import load_volume_file, node_to_volume
    from clinicalai.phantoms.cardiac import cardiac_case

    cine = cardiac_case(3, "ED").image
    frames = np.stack([cine.array, cine.array * 1.1], axis=-1).transpose(2, 1, 0, 3)
    nib.save(nib.Nifti1Image(frames.astype(np.float32), np.diag(list(cine.spacing) + [1.0])), tmp_path / "cine_4d.nii.gz")
    node = load_volume_file(ctx, str(tmp_path / "cine_4d.nii.gz"))
    np.testing.assert_allclose(node_to_volume(node).array, cine.array, rtol=1e-5)  # the first phase, as said
    logic = SegCorrectLogic(ctx)
    params = SegCorrectParameters(input_volume=node.GetID(), correct=False)
    before = _count(ctx.scene)
    with pytest.raises(FitNotConfirmed) as err:
        logic.run(params)
    assert _count(ctx.scene) == before
    assert [p.code for p in err.value.problems] == ["frames"]
    assert "first of the 2 time points of cine_4d.nii.gz" in str(err.value)
    # a 3D file of the same image asks nothing
    from clinicalai.volume import write_volume

    write_volume(cine, tmp_path / "ed.nii.gz")
    plain = load_volume_file(ctx, str(tmp_path / "ed.nii.gz"))
    assert logic.require_fit(params, cine, [""], node=plain) == ()


def test_a_frame_browsed_to_in_a_sequence_is_segmented_with_a_note_saying_which(ctx):
    """A cine loaded as a sequence shows the phase the user browsed to: SegCorrect asks nothing
    (the frame was chosen), segments that phase, and its warnings say which frame of how many
    the result is of, since the result does not follow the browser to another frame."""
    from scene_builders import browsed_sequence

    from clinicalai.mrml.segmentations import segmentation_to_labels
    from clinicalai.phantoms.cardiac import cardiac_case

    phases = [cardiac_case(3, phase).image for phase in ("ED", "ES")]
    proxy = browsed_sequence(ctx, phases, "cine", selected=1)
    from clinicalai.mrml.volumes import node_to_volume

    np.testing.assert_allclose(node_to_volume(proxy).array, phases[1].array)  # the end-systolic phase
    logic = SegCorrectLogic(ctx)
    params = logic.run(SegCorrectParameters(input_volume=proxy.GetID(), correct=False))
    assert any("made on frame 2 of the 2 of the sequence 'cine'; it stays as it is when another frame is browsed to"
               in w for w in params.warnings)
    raw = segmentation_to_labels(ctx.scene.GetNodeByID(params.raw_segmentation), phases[1])
    assert raw.same_grid(phases[1]) and np.count_nonzero(raw.array) > 0


def test_a_node_slicer_read_from_a_4d_nrrd_asks_first_too(ctx, tmp_path):
    """Slicer's reader keeps the first time point of a 4D NRRD as silently as of a 4D NIfTI
    (measured on slicer-core): SegCorrect asks first, naming the file's time points."""
    import SimpleITK as sitk

    from clinicalai.mrml.volumes import load_volume_file, node_to_volume
    from clinicalai.phantoms.cardiac import cardiac_case

    phases = [cardiac_case(3, phase).image for phase in ("ED", "ES")]
    sitk.WriteImage(sitk.JoinSeries([p.to_sitk() for p in phases]), str(tmp_path / "cine_4d.nrrd"))
    node = load_volume_file(ctx, str(tmp_path / "cine_4d.nrrd"))
    np.testing.assert_allclose(node_to_volume(node).array, phases[0].array, rtol=1e-5)  # the first phase, no word
    before = _count(ctx.scene)
    with pytest.raises(FitNotConfirmed) as err:
        SegCorrectLogic(ctx).run(SegCorrectParameters(input_volume=node.GetID(), correct=False))
    assert _count(ctx.scene) == before
    assert "first of the 2 time points of cine_4d.nrrd" in str(err.value)

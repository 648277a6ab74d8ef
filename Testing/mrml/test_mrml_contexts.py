"""The same MRML helpers on the other hosts: a trame-slicer SlicerApp (the browser app) and
the headless stand-ins for ``slicer.util``; the first-use dependency check."""

import numpy as np
import pytest

from clinicalai.mrml.context import MRMLContext
from clinicalai.mrml.dependencies import missing_packages
from clinicalai.mrml.segmentations import add_segmentation_node, segmentation_to_labels
from clinicalai.mrml.volumes import add_volume_node, node_to_volume


def test_helpers_work_on_a_trame_slicer_app(oblique_volume, oblique_labels):
    pytest.importorskip("trame_slicer")
    from trame_slicer.core import SlicerApp

    ctx = MRMLContext.from_slicer_app(SlicerApp())
    node = add_volume_node(ctx.scene, oblique_volume, "image")
    assert node_to_volume(node).same_grid(oblique_volume)
    seg = add_segmentation_node(ctx.scene, oblique_labels, "labels")
    np.testing.assert_array_equal(segmentation_to_labels(seg, oblique_volume).array, oblique_labels.array)


def test_slicer_util_runs_on_the_headless_stand_ins(ctx, oblique_volume):
    import slicer
    import slicer.util

    from clinicalai.mrml.headless import install_slicer_stand_ins

    install_slicer_stand_ins(ctx)  # another test may have made a newer headless scene
    assert slicer.mrmlScene is ctx.scene
    assert slicer.modules.volumes.logic() is ctx.volumes_logic
    node = add_volume_node(ctx.scene, oblique_volume, "via util")
    # slicer.util's numpy view is (z, y, x), as Volume.array
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), oblique_volume.array)
    assert slicer.util.getNode("via util") is node
    assert MRMLContext.from_slicer().scene is ctx.scene


def test_missing_packages_names_only_what_cannot_be_imported():
    assert missing_packages([("json", "json"), ("clinicalai_no_such_module", "no-such-package>=1")]) == ["no-such-package>=1"]


def test_panel_helpers_work_before_the_engine_packages_are_installed(monkeypatch):
    """A fresh Slicer has no torch / pydantic: the panels still open (empty model list,
    auto / CPU devices) and offer the installation on first use."""
    import builtins

    from clinicalai.mrml import model_choices as logic

    real_import = builtins.__import__

    def no_engine_packages(name, *args, **kwargs):
        relative_models = name == "models" and len(args) > 3 and args[3] > 0  # "from ..models import"
        if name.split(".")[0] in ("torch", "pydantic") or relative_models:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    assert [d["value"] for d in logic.device_choices()][0] == "auto"
    monkeypatch.setattr(builtins, "__import__", no_engine_packages)
    assert logic.bundled_models("segmentation") == []
    assert [d["value"] for d in logic.device_choices()] == ["auto", "cpu"]


def test_every_name_the_package_exports_resolves():
    import clinicalai.mrml as mrml

    for name in mrml.__all__:
        assert callable(getattr(mrml, name)), name

"""Static checks of the three Slicer modules (no desktop Slicer here): .ui files parse, every
``self.ui.<name>`` exists with the right widget class, parameter-node names match, the
scripted-module classes are there, and CMakeLists.txt lists every module file."""

import ast
import dataclasses
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = {
    "SegCorrect": "clinicalai.mrml.segcorrect_logic:SegCorrectParameters",
    "PetRecurrence": "clinicalai.mrml.pet_logic:PetRecurrenceParameters",
    "AttributionViewer": "clinicalai.mrml.attribution_logic:AttributionViewerParameters",
}
#: widget-name suffix -> the classes such a widget may have (the naming convention of the .ui files)
SUFFIX_CLASSES = {
    "Selector": {"qMRMLNodeComboBox"},
    "CollapsibleButton": {"ctkCollapsibleButton"},
    "Button": {"QPushButton", "QToolButton"},
    "CheckBox": {"QCheckBox"},
    "ComboBox": {"QComboBox", "ctkComboBox"},
    "PathLineEdit": {"ctkPathLineEdit"},
    "LineEdit": {"QLineEdit"},  # after PathLineEdit: the first suffix that matches decides
    "Slider": {"ctkSliderWidget", "qMRMLSliderWidget"},
    "Label": {"QLabel"},
    "ProgressBar": {"QProgressBar"},
    "TableView": {"qMRMLTableView"},
    "Widget": {"QWidget"},
}
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QComboBox", "QProgressBar", "QTableView", "QLineEdit"}


def _ui(module):
    return ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()


def _widgets(root):
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _source(module):
    return ast.parse((ROOT / module / f"{module}.py").read_text(), filename=f"{module}.py")


def _ui_names_used(tree):
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def _expected_classes(name):
    for suffix, classes in SUFFIX_CLASSES.items():
        if name.lower().endswith(suffix.lower()):
            return classes
    return None


@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_and_declares_its_custom_widgets(module):
    root = _ui(module)
    assert root.tag == "ui" and root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    widgets = _widgets(root)
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    for name, cls in widgets.items():
        assert cls in QT_CLASSES or cls in declared, f"{module}.ui: {name} is a {cls}, not declared in <customwidgets>"
    for connection in root.iter("connection"):
        assert connection.findtext("sender") in widgets and connection.findtext("receiver") in widgets


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_the_widget_uses_exists_with_a_matching_class(module):
    widgets = _widgets(_ui(module))
    used = _ui_names_used(_source(module))
    assert used, "the widget code uses no self.ui names"
    for name in sorted(used):
        assert name in widgets, f"{module}.py uses self.ui.{name}, which {module}.ui does not have"
        expected = _expected_classes(name)
        assert expected is not None, f"self.ui.{name}: name has no known widget suffix"
        assert widgets[name] in expected, f"self.ui.{name} is a {widgets[name]} in the .ui, expected {expected}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_names_in_ui_are_fields_of_the_parameter_node_wrapper(module):
    tree = _source(module)
    wrappers = [
        c for c in tree.body
        if isinstance(c, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in c.decorator_list)
    ]
    assert len(wrappers) == 1
    fields = {s.target.id for s in wrappers[0].body if isinstance(s, ast.AnnAssign)}
    names = {
        p.findtext("string")
        for p in _ui(module).iter("property")
        if p.get("name") == "SlicerParameterName"
    }
    assert names and names <= fields, f"unknown parameter names in {module}.ui: {names - fields}"


def _annotation_node_types(annotation):
    """Node class names of a wrapper annotation: ``X``, ``Union[X, Y]``, ``Optional[X]``."""
    if isinstance(annotation, ast.Name):
        return [annotation.id]
    if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") in ("Union", "Optional"):
        elts = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        return [e.id for e in elts]
    return []


@pytest.mark.parametrize("module", MODULES)
def test_node_selectors_offer_the_node_types_of_their_parameter(module):
    """The wrapper sets a bound selector's nodeTypes from the annotation: the .ui must agree."""
    tree = _source(module)
    (wrapper,) = [c for c in tree.body if isinstance(c, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in c.decorator_list)]
    annotations = {s.target.id: _annotation_node_types(s.annotation) for s in wrapper.body if isinstance(s, ast.AnnAssign)}
    checked = 0
    for widget in _ui(module).iter("widget"):
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        props = {p.get("name"): p for p in widget.findall("property")}
        if "SlicerParameterName" not in props:
            continue
        types = [s.text for s in props["nodeTypes"].iter("string")]
        assert types == annotations[props["SlicerParameterName"].findtext("string")], widget.get("name")
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("module", MODULES)
def test_module_follows_the_scripted_module_template(module):
    tree = _source(module)
    bases = {c.name: {getattr(b, "id", None) for b in c.bases} for c in tree.body if isinstance(c, ast.ClassDef)}
    assert "ScriptedLoadableModule" in bases[module]
    assert "ScriptedLoadableModuleWidget" in bases[f"{module}Widget"]
    assert "ScriptedLoadableModuleLogic" in bases[f"{module}Logic"]
    assert "ScriptedLoadableModuleTest" in bases[f"{module}Test"]
    # no computing in the GUI: the module never imports the engine workflows directly
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith(("clinicalai.segcorrect", "clinicalai.pet", "clinicalai.attribution", "clinicalai.generative")) for m in imported)


@pytest.mark.parametrize("module", MODULES)
def test_engine_parameters_built_by_the_widget_exist(module):
    """Keyword arguments of ``<Module>Parameters(...)`` calls are fields of that dataclass."""
    path, name = MODULES[module].split(":")
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(path), name))}
    calls = [
        n for n in ast.walk(_source(module))
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name
    ]
    assert calls
    for call in calls:
        assert {k.arg for k in call.keywords} <= fields


@pytest.mark.parametrize("module", MODULES)
def test_cmakelists_lists_every_module_file(module):
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text()
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    assert "slicerMacroBuildScriptedModule" in text
    listed = set(re.findall(r"^\s+([\w${}./-]+\.\w+)\s*$", text.replace("${MODULE_NAME}", module), re.M))
    files = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != "CMakeLists.txt" and "__pycache__" not in p.parts
    }
    assert files, "empty module folder"
    assert files == listed, f"not listed: {files - listed}; listed but missing: {listed - files}"
    top = (ROOT / "CMakeLists.txt").read_text()
    assert f"add_subdirectory({module})" in top

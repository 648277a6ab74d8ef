"""Stand-ins for the Qt-only parts of Slicer's scripted-module API that slicer-core lacks
(``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``), as far as a module
file needs them at import and in its Logic / Test classes; everything MRML stays real.

One place for both users: the self-test runner (``test_slicer_module_selftests.py``) and the
fresh-Slicer import check of ``test_mrml_panels.py``, which runs this file in a subprocess. A
unique module name, on ``sys.path`` through ``conftest.py``, as ``foundation_helpers`` is."""

import types
import unittest


def stand_in_modules():
    """``{module name: module}`` to put into ``sys.modules`` before loading a module file."""
    import slicer

    from clinicalai.mrml.parameters import get_parameter_node

    qt = types.ModuleType("qt")
    qt.QTimer = object
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            self.moduleName = type(self).__name__[: -len("Logic")]

        def getParameterNode(self):
            return get_parameter_node(slicer.mrmlScene, self.moduleName)

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=1000):  # noqa: N802 - Slicer's name
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.WithinRange = lambda lo, hi: (lo, hi)
    return {"qt": qt, "slicer.ScriptedLoadableModule": slm, "slicer.parameterNodeWrapper": pnw}


class PanelTimer:
    """What a panel's ``qt.QTimer`` is asked to do (no Qt here): the runner's tick is called by hand."""

    def __init__(self):
        self.calls = []

    def setInterval(self, ms):  # noqa: N802 - Qt's names
        self.calls.append(("interval", ms))

    def connect(self, signal, slot):
        self.calls.append(("connect", signal))
        self.tick = slot

    def start(self):
        self.calls.append(("start",))

    def stop(self):
        self.calls.append(("stop",))


def panel_ui():
    """The widgets a panel's runner drives (Apply, Cancel, progress, status, randomisation)."""
    widget = lambda **kw: types.SimpleNamespace(**{"enabled": True, "visible": True, "value": 0, "text": "", **kw})  # noqa: E731
    return types.SimpleNamespace(applyButton=widget(), cancelButton=widget(enabled=False), progressBar=widget(visible=False),
                                 statusLabel=widget(), randomizationButton=widget())

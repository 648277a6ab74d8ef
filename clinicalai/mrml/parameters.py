"""Panel state as plain dataclasses stored in a ``vtkMRMLScriptedModuleNode``, so it is
saved with the scene and restored with it (desktop and browser alike).

Fields declared with :func:`node_field` / :func:`nodes_field` hold MRML node IDs and are
stored as node references (so IDs stay right when a scene is loaded or imported); every
other field is stored as a JSON string parameter of the same name. The desktop widgets put
``slicer.parameterNodeWrapper`` on the GUI side; this is the engine side.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, List, Optional, Type, TypeVar

import numpy as np

T = TypeVar("T")

_NODE = "clinicalai_node"
_NODES = "clinicalai_nodes"
_ROLE = "clinicalai_role"
_GUI_FLAG = "clinicalai_gui_flag"
_TRANSIENT = "clinicalai_transient"


def jsonable(value: Any) -> Any:
    """A JSON-able copy of an engine value for a parameter: numpy scalars and arrays become
    Python numbers and lists, tuples lists, dict keys strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def node_field(default: Optional[str] = None, role: Optional[str] = None) -> Any:
    """A dataclass field holding one MRML node ID (stored as a node reference).

    ``role``: the reference role, default ``ClinicalAI.<field name>``. A desktop panel gives
    the name of its ``parameterNodeWrapper`` field, so the GUI and the logic share one
    reference in the node instead of keeping two copies in step."""
    return dataclasses.field(default=default, metadata={_NODE: True, **({_ROLE: role} if role else {})})


def gui_flag_field(default: bool) -> Any:
    """A bool the desktop panel's ``parameterNodeWrapper`` edits under the same name: stored
    as Slicer's wrapper stores a bool (``"True"`` / ``"False"``), so GUI and logic read one
    value (JSON ``true`` / ``false`` of older scenes is read too)."""
    return dataclasses.field(default=default, metadata={_GUI_FLAG: True})


def transient_field(default: Any) -> Any:
    """A field that lives for one call and is never stored in (nor read from) the parameter
    node: e.g. ``confirmed_fit``, the user's "run anyway" for one run, which a saved scene or
    the next run must not inherit."""
    return dataclasses.field(default=default, metadata={_TRANSIENT: True})


def nodes_field() -> Any:
    """A dataclass field holding a list of MRML node IDs (stored as node references)."""
    return dataclasses.field(default_factory=list, metadata={_NODES: True})


def get_parameter_node(scene: Any, module_name: str) -> Any:
    """The module's singleton parameter node, created when missing (as
    ``ScriptedLoadableModuleLogic.getParameterNode`` does, so both find the same node)."""
    node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
    if node is not None:
        return node
    node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
    node.UnRegister(None)  # CreateNodeByClass returns a new reference
    node.SetSingletonTag(module_name)
    node.SetModuleName(module_name)
    node.SetName(scene.GenerateUniqueName(module_name))
    return scene.AddNode(node)


def _role(f: "dataclasses.Field[Any]") -> str:
    return f.metadata.get(_ROLE) or f"ClinicalAI.{f.name}"


def write_parameters(node: Any, params: Any) -> Any:
    """Store every field of the dataclass ``params`` in the parameter node (one Modified event)."""
    was = node.StartModify()
    try:
        for f in dataclasses.fields(params):
            value = getattr(params, f.name)
            if f.metadata.get(_TRANSIENT):
                continue
            if f.metadata.get(_NODE):
                if f.metadata.get(_ROLE):
                    # the wrapper's mark that the parameter is set (its NodeSerializer writes
                    # "" beside the reference; without it the wrapper would reset the reference)
                    node.SetParameter(_role(f), "")
                node.SetNodeReferenceID(_role(f), value or None)
            elif f.metadata.get(_GUI_FLAG):
                node.SetParameter(f.name, "True" if value else "False")
            elif f.metadata.get(_NODES):
                node.RemoveNodeReferenceIDs(_role(f))
                for node_id in value or []:
                    node.AddNodeReferenceID(_role(f), node_id)
            else:
                node.SetParameter(f.name, json.dumps(value))
    finally:
        node.EndModify(was)
    return node


def read_parameters(node: Any, cls: Type[T]) -> T:
    """A ``cls`` instance from the parameter node; missing or unreadable values keep the
    dataclass default (a scene saved by an older version still opens)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.metadata.get(_TRANSIENT):
            continue
        if f.metadata.get(_NODE):
            node_id = node.GetNodeReferenceID(_role(f))
            if node_id:
                values[f.name] = node_id
        elif f.metadata.get(_NODES):
            ids: List[str] = [
                node.GetNthNodeReferenceID(_role(f), i) for i in range(node.GetNumberOfNodeReferences(_role(f)))
            ]
            values[f.name] = [i for i in ids if i]
        elif f.metadata.get(_GUI_FLAG) and node.HasParameter(f.name):
            text = node.GetParameter(f.name).lower()
            if text in ("true", "false"):
                values[f.name] = text == "true"
        elif node.HasParameter(f.name):
            try:
                values[f.name] = json.loads(node.GetParameter(f.name))
            except ValueError:
                continue
    return cls(**values)  # type: ignore[call-arg]

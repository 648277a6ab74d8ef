"""Table nodes from and to lists of row dicts (the per-slice table, metrics, correlations)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .volumes import unique_name


def _column(name: str, values: Sequence[Any]):
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkIntArray, vtkStringArray

    if all(isinstance(v, (bool, np.bool_)) for v in values):
        arr = vtkIntArray()  # tables show 0/1; vtkBitArray is not editable in Slicer's table view
        conv = int
    elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        arr, conv = vtkIntArray(), int
    elif all(isinstance(v, (int, float, np.integer, np.floating)) or v is None for v in values):
        arr = vtkDoubleArray()
        conv = lambda v: float("nan") if v is None else float(v)  # noqa: E731
    else:
        arr = vtkStringArray()
        conv = lambda v: "" if v is None else str(v)  # noqa: E731
    arr.SetName(name)
    arr.SetNumberOfValues(len(values))
    for i, v in enumerate(values):
        arr.SetValue(i, conv(v))
    return arr


def fill_table_node(node: Any, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> Any:
    """Replace the content of a table node with ``rows`` (columns in first-seen order unless
    ``columns`` is given); numbers become numeric columns, anything else text."""
    cols: List[str] = list(columns) if columns else []
    if not columns:
        for row in rows:
            cols.extend(k for k in row if k not in cols)
    table = node.GetTable()
    table.Initialize()
    for name in cols:
        table.AddColumn(_column(name, [row.get(name) for row in rows]))
    node.Modified()
    return node


def _uses_column_names_as_header(node: Any) -> bool:
    get = getattr(node, "GetUseColumnTitleAsColumnHeader", None) or node.GetUseColumnNameAsColumnHeader
    return bool(get())


def add_table_node(
    scene: Any, rows: Sequence[Mapping[str, Any]], name: str, columns: Optional[Sequence[str]] = None, locked: bool = True
) -> Any:
    """A new table node (unique ``name``) holding ``rows``; the column names are the column
    headers of Slicer's table views (so view row ``k`` is table row ``k``), and the table is
    read-only in the views when ``locked`` (results change through the panels' buttons)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", unique_name(scene, name))
    # Slicer >= 5.4 names it "column title"; older versions "column name"
    setter = getattr(node, "SetUseColumnTitleAsColumnHeader", None) or node.SetUseColumnNameAsColumnHeader
    setter(True)
    node.SetLocked(bool(locked))
    return fill_table_node(node, rows, columns)


def table_row_of_view_row(node: Any, view_row: int) -> Optional[int]:
    """The table row shown in row ``view_row`` of a (source, unsorted) ``qMRMLTableModel``:
    the model shows the column names as an extra first row unless the table uses them as
    column headers. ``None`` for that header row or a row past the end."""
    row = int(view_row) if _uses_column_names_as_header(node) else int(view_row) - 1
    return row if 0 <= row < node.GetTable().GetNumberOfRows() else None


def table_rows(node: Any) -> List[Dict[str, Any]]:
    """The rows of a table node as dicts (numbers as Python numbers)."""
    table = node.GetTable()
    rows: List[Dict[str, Any]] = [dict() for _ in range(table.GetNumberOfRows())]
    for c in range(table.GetNumberOfColumns()):
        column = table.GetColumn(c)
        name = column.GetName()
        for r in range(table.GetNumberOfRows()):
            value = column.GetValue(r)
            rows[r][name] = value if isinstance(value, (str, int, float)) else value.ToString()
    return rows

"""How a workflow maps its per-case work over a list of cases.

An evaluation (``evaluate_correctors``, ``evaluate_segmenter``, ``evaluate_csv``, ...) writes its
per-case work as a module-level function ``fn(item, *shared) -> result`` and hands it to a
:data:`CaseMapper`, which returns the results in the order of the items. The default,
:func:`serial_map`, is the plain loop in this process; ``clinicalai.batch.parallel`` gives a
mapper with the same signature that runs the cases on Dask workers (``--workers``,
``--scheduler`` of the ``evaluate`` commands). The engines depend on this signature only, never
on Dask (imports point downward: the command line picks the mapper).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Protocol, Sequence


class CaseMapper(Protocol):
    """``mapper(fn, items, shared=(), on_done=None) -> [fn(item, *shared) for item in items]``.

    ``shared``: objects every case needs (models, settings), passed after the item;
    ``on_done(done)``: called with the count of finished cases after each one, in the caller's
    thread (progress; it may raise :class:`~clinicalai.errors.Cancelled` to stop the rest).
    """

    def __call__(self, fn: Callable[..., Any], items: Sequence[Any], shared: Sequence[Any] = (),
                 on_done: Optional[Callable[[int], None]] = None) -> List[Any]: ...


def serial_map(fn: Callable[..., Any], items: Sequence[Any], shared: Sequence[Any] = (),
               on_done: Optional[Callable[[int], None]] = None) -> List[Any]:
    """The cases one after the other in this process (the :data:`CaseMapper` default)."""
    results = []
    for i, item in enumerate(items):
        results.append(fn(item, *shared))
        if on_done is not None:
            on_done(i + 1)
    return results

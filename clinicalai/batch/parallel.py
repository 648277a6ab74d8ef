"""The per-case work of ``clinicalai evaluate ...`` on the batch engine's Dask cluster.

:func:`dask_mapper` gives a :data:`clinicalai.casemap.CaseMapper` that runs ``fn(item,
*shared)`` for every item on a LocalCluster of ``--workers`` processes, or on the cluster of
``--scheduler``, and returns the results in item order, as the in-process loop
(:func:`clinicalai.casemap.serial_map`) does: with one local worker it *is* that loop. Models
in the items or in ``shared`` travel as their file (:class:`ModelHandle`) and each worker loads
each of them once (the batch model cache), instead of pickling networks into every task.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..casemap import CaseMapper, serial_map
from ..errors import InputError
from ..models import load_model
from ..models.package import LoadedModel
from ..models.registry import code_trust_allowed
from ..progress import CancelToken
from .run import dask_client, default_workers
from .worker import _CASE_LOCK, setup_worker, warm_up
from .workflows import NETWORKS


@dataclass(frozen=True)
class ClusterOptions:
    """Where cases run: ``workers`` local processes (``None``: one per GPU, else cores /
    threads), ``threads_per_worker`` torch threads each (``None``: leave torch's setting, in
    this process), or the Dask cluster of ``scheduler`` (``tcp://host:port``)."""

    workers: Optional[int] = 1
    threads_per_worker: Optional[int] = None
    scheduler: Optional[str] = None

    @property
    def in_process(self) -> bool:
        """One local worker: the plain loop in this process (no cluster, nothing pickled)."""
        return self.scheduler is None and self.workers == 1

    @classmethod
    def from_args(cls, args: argparse.Namespace, workers: Optional[int] = None) -> "ClusterOptions":
        """The options :func:`add_cluster_args` added to a parser, checked; ``workers``: the
        count when ``--workers`` is not given (``None``: one per GPU, else cores / threads).

        Raises:
            InputError: a count below 1, or ``--workers`` with ``--scheduler``.
        """
        if args.batch_workers is not None and args.batch_workers < 1:
            raise InputError("--workers must be at least 1")
        if args.batch_threads is not None and args.batch_threads < 1:
            raise InputError("--threads-per-worker must be at least 1")
        if args.batch_scheduler and args.batch_workers is not None:
            raise InputError("--workers starts a local cluster; with --scheduler the cluster's own workers run the cases")
        given = args.batch_workers if args.batch_workers is not None else workers
        return cls(None if args.batch_scheduler else given, args.batch_threads, args.batch_scheduler)


def add_cluster_args(parser: argparse.ArgumentParser, workers: str = "one per GPU, else cores / threads per worker",
                     threads: Optional[int] = 1, what: str = "cases") -> None:
    """``--workers N``, ``--threads-per-worker T``, ``--scheduler ADDRESS`` (dests ``batch_workers``,
    ``batch_threads``, ``batch_scheduler``; read them with :meth:`ClusterOptions.from_args`), for
    ``clinicalai batch`` and ``clinicalai evaluate``. ``workers``: what the help says the default
    is (the count itself comes from ``from_args``); ``threads``: the default thread count
    (``None``: torch's own setting in this process, 1 on workers)."""
    parser.add_argument("--workers", dest="batch_workers", type=int, metavar="N",
                        help=f"local Dask worker processes that run the {what} (default: {workers})")
    parser.add_argument("--threads-per-worker", dest="batch_threads", type=int, default=threads, metavar="T",
                        help="torch threads of each worker (default " + ("1" if threads == 1 else "1 on workers; "
                             "torch's own setting in this process") + ")")
    parser.add_argument("--scheduler", dest="batch_scheduler", metavar="ADDRESS",
                        help=f"run the {what} on this Dask scheduler's workers (tcp://host:port) instead of a local "
                             "cluster; they must see the input files at the same paths (docs/batch.md)")


def add_evaluate_cluster_args(parser: argparse.ArgumentParser, what: str = "cases") -> None:
    """The cluster options of a ``clinicalai evaluate`` command: by default its ``what`` run
    one after the other in its own process, as before (read them with :func:`case_mapper`)."""
    add_cluster_args(parser, workers=f"1: the {what} one after the other in this process", threads=None, what=what)


def case_mapper(args: argparse.Namespace) -> CaseMapper:
    """The :data:`~clinicalai.casemap.CaseMapper` of an ``evaluate`` command's options
    (:func:`add_evaluate_cluster_args`): the loop here, or Dask workers."""
    return dask_mapper(ClusterOptions.from_args(args, workers=1))


@dataclass(frozen=True)
class ModelHandle:
    """A loaded model as it travels to a worker: its file, device and the trust in force;
    :meth:`load` gives the worker's own copy (loaded once per worker process)."""

    path: str
    device: str
    trust_code: bool = False

    def load(self) -> Any:

        return load_model(self.path, device=self.device, trust_code=self.trust_code)


def _ship(obj: Any) -> Any:
    """``obj`` with every :class:`~clinicalai.models.LoadedModel` in it (also in lists, tuples
    and dict values) as a :class:`ModelHandle`, and every cancel token as ``None`` (a worker
    cannot see the driver's flag; the driver checks it between cases)."""

    if isinstance(obj, CancelToken):
        return None
    if isinstance(obj, LoadedModel):
        # the driver loaded this file under the user's trust decision (--trust-code, the store)
        return ModelHandle(str(obj.path), "cpu" if str(obj.device) == "cpu" else "cuda", code_trust_allowed())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_ship(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _ship(v) for k, v in obj.items()}
    return obj


def _unship(obj: Any) -> Any:
    if isinstance(obj, ModelHandle):
        return obj.load()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unship(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unship(v) for k, v in obj.items()}
    return obj


def run_item(fn: Callable[..., Any], item: Any, shipped: Sequence[Any], threads: int, pin_gpu: bool) -> Any:
    """One case on a worker: its models (in ``item`` or ``shipped``) from the worker's cache,
    then ``fn(item, *shared)``."""
    setup_worker(threads, pin_gpu)
    with _CASE_LOCK:  # one case at a time per process: models and torch threads are shared
        return fn(_unship(item), *_unship(shipped))


def dask_mapper(options: ClusterOptions) -> CaseMapper:
    """A :data:`~clinicalai.casemap.CaseMapper` on the cluster ``options`` name; the plain
    loop (:func:`~clinicalai.casemap.serial_map`) for one local worker."""
    if options.in_process:
        return serial_map

    def mapper(fn: Callable[..., Any], items: Sequence[Any], shared: Sequence[Any] = (),
               on_done: Optional[Callable[[int], None]] = None) -> List[Any]:
        return map_on_dask(fn, items, options, shared, on_done)

    return mapper


def map_on_dask(fn: Callable[..., Any], items: Sequence[Any], options: ClusterOptions, shared: Sequence[Any] = (),
                on_done: Optional[Callable[[int], None]] = None) -> List[Any]:
    """``[fn(item, *shared) for item in items]`` on Dask workers, in item order. A case's
    exception is raised here, as the loop would raise it (the other cases are cancelled)."""
    from distributed import as_completed

    items = list(items)
    if not items:
        return []
    threads = options.threads_per_worker or 1
    workers = options.workers or default_workers(threads)
    shipped = _ship(tuple(shared))
    pin_gpu = options.scheduler is None
    with dask_client(options.scheduler, min(workers, len(items)), threads) as client:
        client.run(warm_up, fn, threads, pin_gpu, NETWORKS)  # every worker at once, before its first case
        tag = os.urandom(4).hex()
        futures = [client.submit(run_item, fn, _ship(item), shipped, threads, pin_gpu, pure=False,
                                 key=f"clinicalai-case-{i}-{tag}") for i, item in enumerate(items)]
        index: Dict[str, int] = {f.key: i for i, f in enumerate(futures)}
        results: List[Any] = [None] * len(items)
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                results[index[future.key]] = future.result()
                if on_done is not None:
                    on_done(done)
        except BaseException:
            client.cancel(futures)
            raise
    return results


__all__ = ["ClusterOptions", "ModelHandle", "add_cluster_args", "add_evaluate_cluster_args", "case_mapper", "dask_mapper",
           "map_on_dask", "run_item"]

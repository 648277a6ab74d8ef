"""What the batch tests share: warming Dask workers up in the background."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import pytest


@contextlib.contextmanager
def _warming_up(client, pin_gpu: bool) -> Iterator[None]:
    """While the block runs, every worker of ``client`` runs the batch engine's own warm-up
    (:func:`clinicalai.batch.worker.warm_up`: torch, monai and the networks, a run's first step;
    ~9 s per process on 2 cores), called from a thread of this process, so that the imports
    overlap with what this process does meanwhile. ``client.run`` executes it on each worker's
    event loop, as a run's warm-up does: a run that comes meanwhile waits for it there, and no
    two imports ever run at once in a worker."""
    from concurrent.futures import ThreadPoolExecutor

    from clinicalai.batch.worker import can_see, warm_up
    from clinicalai.batch.workflows import NETWORKS

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(client.run, warm_up, can_see, 1, pin_gpu, NETWORKS)
        yield
        assert all(done.result().values())


@pytest.fixture(scope="session")
def warming_up() -> Callable:
    """:func:`_warming_up` (a fixture: the test modules import nothing from each other)."""
    return _warming_up

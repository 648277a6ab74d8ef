"""The background-run plumbing of the panels: compute on a worker thread, progress and the
result back on the server loop, cancel means nothing is applied, errors become one line."""

from __future__ import annotations

import asyncio
import threading
import time

from clinicalai.errors import InputError
from clinicalai.progress import check_cancel, report
from clinicalai.web.jobs import Job


def _drive(compute, timeout: float = 10.0, cancel_after: float = None):
    """Run a Job on a fresh loop; returns (applied results, statuses seen, loop thread ids)."""
    applied, statuses, threads = [], [], {}

    async def main():
        loop = asyncio.get_running_loop()
        threads["loop"] = threading.get_ident()

        def apply(result):
            threads["apply"] = threading.get_ident()
            applied.append(result)

        def on_status(status):
            statuses.append((status.running, round(status.fraction, 3), status.message, status.error))

        def wrapped(progress, cancel):
            threads["compute"] = threading.get_ident()
            return compute(progress, cancel)

        job = Job(wrapped, apply, on_status, loop=loop).start()
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            job.cancel()
        start = time.monotonic()
        while not job.done.is_set():
            assert time.monotonic() - start < timeout
            await asyncio.sleep(0.01)
        return job

    # a thread of its own: the browser tests' sync Playwright keeps a loop on the main thread
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(asyncio.run, main()).result()
    return job, applied, statuses, threads


def test_result_is_applied_on_the_loop_with_progress():
    def compute(progress, cancel):
        for i in range(5):
            report(progress, i / 5, f"step {i}")
            time.sleep(0.12)
        return 42

    job, applied, statuses, threads = _drive(compute)
    assert applied == [42]
    assert threads["compute"] != threads["loop"] and threads["apply"] == threads["loop"]
    fractions = [s[1] for s in statuses if s[0]]
    assert fractions == sorted(fractions) and max(fractions) > 0.5, statuses
    assert statuses[-1] == (False, 1.0, "done", "")


def test_cancel_applies_nothing():
    def compute(progress, cancel):
        for _ in range(200):
            check_cancel(cancel)
            time.sleep(0.01)
        return "finished"

    job, applied, statuses, _ = _drive(compute, cancel_after=0.1)
    assert applied == []
    assert "cancelled" in statuses[-1][3] and statuses[-1][0] is False


def test_errors_become_one_line_and_nothing_is_applied():
    def bad_input(progress, cancel):
        raise InputError("the PET has no units: choose SUV or Bq/mL")

    _, applied, statuses, _ = _drive(bad_input)
    assert applied == [] and statuses[-1][3] == "the PET has no units: choose SUV or Bq/mL"

    def bug(progress, cancel):
        return {}["missing"]

    _, applied, statuses, _ = _drive(bug)
    assert applied == [] and statuses[-1][3].startswith("internal error: KeyError")

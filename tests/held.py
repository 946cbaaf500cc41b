"""Jobs that last as long as the test wants, on any machine: long by construction, not by workload.

    python tests/held.py MODULE ARGS...

runs a service module (`iclsel.app.server`, `iclsel.workers.main`) as `python -m MODULE ARGS...` would,
with these hooks (service_fixtures.held_api and held_worker start processes this way):

- a held job: a selection one of whose queries' input starts with HOLD does no model work; it reports
  progress ("held", 0, 1) and waits until it is cancelled (or its process ends), then ends as
  cancelled. Everything else is the service's own: it is queued, started, counted in the queue,
  long-polled, cancelled and taken over like any job.
- the anchor-task gate: while the file `anchor-tasks` exists in $ICLSEL_TEST_GATES, it holds a number,
  how many anchor tasks (workers/anchors.py, Redis mode) may still start, in any process; each task that
  starts takes one, and once none is left a task waits at its cancel checkpoint until the file is
  removed. A job is so stopped in the middle of a shared anchor pass, with some tasks done.
- a start gate: with $ICLSEL_TEST_START_GATE set, the module starts once that file exists (a server
  that is certainly not listening yet).

The API of the Redis mode gets no hook (it runs no job, and must not load torch).
"""

from __future__ import annotations

import fcntl
import os
import runpy
import sys
import time
from pathlib import Path

HOLD = "HOLD"  # a query input starting with this holds its job
POLL_S = 0.02


def held_queries(n: int = 2) -> list[dict]:
    """Queries that hold the job they are in (labels alternate, as the tiny pool's do)."""
    return [{"input": f"{HOLD} {i}: this job waits until it is cancelled", "output": ("positive", "negative")[i % 2]}
            for i in range(n)]


def take_ticket(gate: Path) -> bool:
    """True when a task may start: no gate, or one ticket taken from it."""
    try:
        handle = gate.open("r+")
    except FileNotFoundError:
        return True
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read().strip()
        left = int(text) if text else 0
        if left <= 0:
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(left - 1))
        return True


def install(module: str) -> None:
    if module == "iclsel.app.server" and (os.environ.get("REDIS_URL") or os.environ.get("ICLSEL_REDIS_URL")):
        return  # the Redis mode's API: jobs run in the workers
    from iclsel.models import engine as engine_module
    from iclsel.models import tasks

    real_select = engine_module.Engine.select

    def select(self, request, progress=None, should_cancel=None):
        if not any(query.input.startswith(HOLD) for query in request.queries):
            return real_select(self, request, progress, should_cancel)
        while not (should_cancel is not None and should_cancel()):
            if progress is not None:
                progress("held", 0, 1)
            time.sleep(POLL_S)
        raise engine_module.Cancelled("selection cancelled")

    engine_module.Engine.select = select

    gates = os.environ.get("ICLSEL_TEST_GATES")
    if not gates:
        return
    gate = Path(gates) / "anchor-tasks"
    real_task = tasks.run_anchor_task

    def run_anchor_task(loaded_model, task, batch_size=8, checkpoint=lambda: None):
        while not take_ticket(gate):
            checkpoint()  # raises Cancelled once the job is cancelled
            time.sleep(POLL_S)
        return real_task(loaded_model, task, batch_size, checkpoint)

    tasks.run_anchor_task = run_anchor_task  # workers/anchors.py imports it when it computes a task


def main() -> None:
    module, *args = sys.argv[1:]
    start_gate = os.environ.get("ICLSEL_TEST_START_GATE")
    while start_gate and not os.path.exists(start_gate):
        time.sleep(POLL_S)
    sys.path[0] = os.getcwd()  # as with `python -m`: the working directory, not tests/
    install(module)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""Jobs run on the pool: each takes a free member through its lease, runs, and gives it back.

    pool = DevicePool(plan, paths.state_dir() / "leases")
    results = pool.map([job_a, job_b, ...])   # job(slot) -> result, at most plan.size at a time

Ctrl-C (or SIGTERM made KeyboardInterrupt) in the calling thread sets `pool.stop`: waiting jobs give up
(LeaseAborted, no run), running ones see it through RunOptions.abort and end `aborted`, each with its
record; map returns what finished, in job order (None for a job that never ran).
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from harness import paths
from harness.backends.host import hooks
from harness.hw.context import HardwareContext
from harness.pool.lease import Lease, LeaseAborted, try_lease
from harness.pool.slots import PoolPlan, Slot, plan_pool

T = TypeVar("T")
POLL_S = 0.2


class DevicePool:
    def __init__(self, plan: PoolPlan, lease_dir: Path):
        self.plan = plan
        self.lease_dir = Path(lease_dir)
        self.stop = threading.Event()  # set on Ctrl-C: no new run starts, running ones are aborted
        self._free = threading.Condition()

    @property
    def size(self) -> int:
        return self.plan.size

    @contextmanager
    def member(self) -> Iterator[Slot]:
        """A free member of the pool, leased for the block; waits for one; LeaseAborted once stopped."""
        slot, leases = self._take()
        try:
            yield slot
        finally:
            for lease in leases:
                lease.release()
            with self._free:
                self._free.notify_all()

    def _take(self) -> tuple[Slot, list[Lease]]:
        while not self.stop.is_set():
            for slot in self.plan.slots:
                leases = _lease_all(slot, self.lease_dir)
                if leases is not None:
                    return slot, leases
            with self._free:  # woken when this process frees one; other processes' are seen by polling
                self._free.wait(POLL_S)
        raise LeaseAborted("stopped while waiting for a free device")

    def map(self, jobs: Sequence[Callable[[Slot], T]]) -> list[T | None]:
        """Every job on a member of its own, waiting for a free one; results in job order (None for a job
        that never ran). A job's own error (not a run's failure: that is a record) ends its siblings that
        have not started, not the pool's other callers, and is raised once all have ended."""
        failed = threading.Event()

        def one(job: Callable[[Slot], T]) -> T | None:
            try:
                with self.member() as slot:
                    if self.stop.is_set() or failed.is_set():
                        return None
                    try:
                        return job(slot)
                    except BaseException:
                        failed.set()
                        raise
            except LeaseAborted:
                return None

        results = run_threads([functools.partial(one, job) for job in jobs], self.stop)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return results  # type: ignore[return-value]


def run_threads(jobs: Sequence[Callable[[], T]], stop: threading.Event) -> list[T | BaseException]:
    """Each job in a thread of its own (candidates of one submit, each spreading its seeds over a pool);
    Ctrl-C in the calling thread sets `stop` and keeps waiting for the jobs, which end their runs as
    aborted (a third Ctrl-C stops waiting). A job's exception is returned in its place."""
    results: list[T | BaseException] = [RuntimeError("not run")] * len(jobs)
    if not jobs:
        return results

    def one(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller in the job's place
            results[i] = e

    interrupts = 0
    # Waited for with futures, not Thread.join: a join that Ctrl-C interrupts can leave the thread looking
    # finished while it still runs (CPython before 3.13).
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="harness-job") as ex:
        pending: set[Future] = {ex.submit(one, i) for i in range(len(jobs))}
        while pending:
            try:
                _done, pending = wait(pending, timeout=POLL_S)
            except KeyboardInterrupt:
                stop.set()
                interrupts += 1
                if interrupts >= 3:  # the user insists; held runs are recorded by the next harness command
                    raise
    return results


def _lease_all(slot: Slot, folder: Path) -> list[Lease] | None:
    """Every lock of the member, or none of them (whatever goes wrong half-way)."""
    taken: list[Lease] = []
    try:
        for key in slot.keys:
            lease = try_lease(key, folder)
            if lease is None:
                break
            taken.append(lease)
        else:
            return taken
    except BaseException:
        for held in taken:
            held.release()
        raise
    for held in taken:
        held.release()
    return None


def run_keys(hw: HardwareContext, cpuset: str | None) -> tuple[str, ...]:
    """The locks one run takes: its GPU, or (a run on the CPU) its CPUs, every CPU of this process's
    when it was not pinned: a CPU run has the host, and no pool member may run beside it."""
    if hw.gpu is not None:
        return (hw.gpu.uuid,)
    cpus = cpuset.split(",") if cpuset else [str(c) for c in sorted(os.sched_getaffinity(0))]
    return tuple(f"cpu{c}" for c in cpus)


@contextmanager
def run_lease(hw: HardwareContext, cpuset: str | None, on_wait: Callable[[str], None],
              stop: threading.Event | None = None, lease_dir: Path | None = None) -> Iterator[None]:
    """A run outside a pool takes its device's lease too, waiting while another harness process (a pool's
    run, or another plain run) holds it: so no two runs of this machine ever share a GPU, and no run on
    the CPU shares the host unflagged. LeaseAborted when `stop` is set while waiting."""
    folder = Path(lease_dir or paths.state_dir() / "leases")
    slot = Slot("this run's device", run_keys(hw, cpuset), hw)
    leases = _lease_all(slot, folder)
    if leases is None:
        on_wait(f"waiting for {', '.join(slot.keys)}: another harness process on this machine holds "
                f"{'it' if len(slot.keys) == 1 else 'them'} (leases in {folder})")
        while leases is None:
            if (stop or threading.Event()).wait(POLL_S):
                raise LeaseAborted("stopped while waiting for a free device")
            leases = _lease_all(slot, folder)
    try:
        yield
    finally:
        for lease in leases:
            lease.release()


def open_pool(parallel: str | int | None, gpus: str | None, backend: Any, hw: HardwareContext,
              nvml_module: Any = None, lease_dir: Path | None = None) -> DevicePool:
    """The pool for --parallel/--gpus on the machine `backend` runs on (its probe: where the runs happen),
    its leases in the harness's state directory."""
    plan = plan_pool(parallel, gpus, hw, lambda uuid: hooks(backend).probe_hardware(uuid, nvml_module))
    return DevicePool(plan, Path(lease_dir or paths.state_dir() / "leases"))

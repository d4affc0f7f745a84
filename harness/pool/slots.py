"""The pool's members on this machine: one per GPU (by UUID; a MIG slice is a member of its own class),
or, on a machine without a GPU, N disjoint sets of CPUs.

    plan_pool("auto", None, hw)  -> every runnable GPU, or one member holding every CPU
    plan_pool("2", "0,2", hw)    -> GPUs 0 and 2
    plan_pool("2", None, cpu_hw) -> two members pinned to disjoint halves of this process's CPUs;
                                    their runs share the host (memory bandwidth, caches), so every one
                                    of their records is flagged shared_host and never enters a baseline
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from harness.hw.context import HardwareContext
from harness.hw.profile import runnable_gpus

AUTO = "auto"


class PoolError(ValueError):
    """The pool asked for cannot be made here; the message says what exists and what to ask for."""


@dataclass(frozen=True)
class Slot:
    """One member: the locks its lease takes, the GPU or CPUs its runs get, and their hardware."""
    name: str  # for people: "GPU 0 (GPU-8f3c...)", "CPUs 0-1"
    keys: tuple[str, ...]  # one lock per GPU or per CPU, so pools of different shapes still never overlap
    hardware: HardwareContext
    gpu: str | None = None  # the GPU's UUID
    cpuset: str | None = None  # "0,1": the CPUs its runs are pinned to (None: not pinned)


@dataclass(frozen=True)
class PoolPlan:
    slots: tuple[Slot, ...]
    shared_host: bool  # several runs at once on one CPU host: their records are flagged

    @property
    def size(self) -> int:
        return len(self.slots)


def parse_parallel(value: str | int | None) -> int | None:
    """--parallel: "auto" -> None (one per device), N >= 1 -> N; anything else is a PoolError."""
    if value is None or str(value).strip().lower() == AUTO:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise PoolError(f"--parallel {value!r}: give auto or a number of runs at once (1, 2, ...)") from None
    if n < 1:
        raise PoolError(f"--parallel {value!r}: give auto or a number of runs at once (1, 2, ...)")
    return n


def cpu_sets(n: int, cpus: list[int] | None = None) -> list[list[int]]:
    """This process's CPUs split into n disjoint, contiguous sets of (nearly) equal size."""
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if n > len(cpus):
        raise PoolError(f"--parallel {n}: this machine has no GPU and only {len(cpus)} CPU(s) for runs; "
                        f"give --parallel {len(cpus)} or less")
    size, extra = divmod(len(cpus), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(cpus[start:end])
        start = end
    return out


def plan_pool(parallel: str | int | None, gpus: str | None, hw: HardwareContext,
              probe: Callable[[str], HardwareContext], cpus: list[int] | None = None) -> PoolPlan:
    """The members for --parallel and --gpus, given this machine's hardware `hw` and a probe of one GPU
    (the backend's probe_hardware: where the runs happen). Every member must be of one GPU class: a
    decision compares seeds, and seeds on two classes are not samples of one thing."""
    n = parse_parallel(parallel)
    devices = runnable_gpus(hw.profile.gpus) if hw.profile.gpus else []
    if gpus:
        devices = _pick(devices, gpus)
    if devices:
        if n is not None and n > len(devices):
            raise PoolError(f"--parallel {n}: only {len(devices)} GPU(s) in the pool "
                            f"({', '.join(str(g.index) for g in devices)}); one run per GPU at a time")
        chosen = devices[:n] if n else devices
        slots = tuple(_gpu_slot(g, probe(g.uuid)) for g in chosen)
        classes = sorted({s.hardware.cls.label for s in slots})
        if len(classes) > 1:
            raise PoolError(f"the pool mixes GPU classes ({', '.join(classes)}): pick one class with --gpus "
                            "(indices or UUIDs); seeds on two classes are not samples of one thing")
        return PoolPlan(slots, shared_host=False)
    sets = cpu_sets(n or 1, cpus)
    if len(sets) == 1:  # one run at a time: the run has the machine, as without a pool
        return PoolPlan((Slot(f"CPUs {_fmt(sets[0])}", tuple(f"cpu{c}" for c in sets[0]), hw),), shared_host=False)
    return PoolPlan(tuple(Slot(f"CPUs {_fmt(s)}", tuple(f"cpu{c}" for c in s), hw, cpuset=",".join(map(str, s)))
                          for s in sets), shared_host=True)


def _gpu_slot(g: Any, hw: HardwareContext) -> Slot:
    return Slot(f"GPU {g.index} ({g.uuid})", (g.uuid,), hw, gpu=g.uuid)


def _pick(devices: list[Any], gpus: str) -> list[Any]:
    picked = []
    for want in (w.strip() for w in gpus.split(",") if w.strip()):
        match = [g for g in devices if g.uuid == want or str(g.index) == want]
        if not match:
            known = ", ".join(f"{g.index}:{g.uuid}" for g in devices) or "none (no GPU visible through NVML)"
            raise PoolError(f"--gpus: no runnable GPU {want!r} here; runnable GPUs: {known}")
        if match[0] not in picked:
            picked.append(match[0])
    return picked


def _fmt(cpus: list[int]) -> str:
    return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 and cpus[-1] - cpus[0] == len(cpus) - 1 else ",".join(map(str, cpus))

"""The executor hooks of a backend whose runs happen on this machine (local, docker): the hardware is
probed and the telemetry sampled here, the run folder is already where the run happens, and a cancel
is an event the backend's execute watches.

A backend that runs elsewhere (a Slurm or Kubernetes job) overrides them: it probes the hardware and
samples NVML on the node that runs the job and returns them with the outcome, ships the run folder to
the node and back (stage_in / stage_out), and cancels the job. The pipeline calls only these hooks
(harness/pipeline/), never detect_hardware or the sampler directly, so a remote backend never labels a
run with the submitting machine's GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.backends.base import RunRequest


class OnThisHost:
    """Mixed into backends that execute on the machine the harness runs on."""

    def probe_hardware(self, gpu: str | None = None, nvml_module: Any = None) -> Any:
        """The HardwareContext of the device a run will get (harness/hw/context.py)."""
        from harness.hw.context import detect_hardware

        return detect_hardware(gpu, nvml_module)

    def start_telemetry(self, gpu_uuid: str | None, series_path: Path, nvml_module: Any = None) -> tuple[Any, str | None]:
        """(sampler, None) sampling the run's GPU from outside the run, or (None, why there is none)."""
        from harness.hw.telemetry import start_sampler

        return start_sampler(gpu_uuid, series_path=series_path, nvml_module=nvml_module)

    def stage_in(self, request: RunRequest) -> None:
        """The run folder is already where the run happens."""

    def stage_out(self, request: RunRequest) -> None:
        """Nothing to bring back: the run wrote into its folder here."""

    def cancel(self, request: RunRequest) -> None:
        """End the run early: execute watches request.cancel and stops the run, which still gets a record."""
        if request.cancel is not None:
            request.cancel.set()


def hooks(backend: Any) -> Any:
    """The backend's executor hooks, or this host's for a backend (a third party's) without them."""
    needed = ("probe_hardware", "start_telemetry", "stage_in", "stage_out", "cancel")
    return backend if all(callable(getattr(backend, n, None)) for n in needed) else OnThisHost()

"""The stages of a run, in the order they happen; `run`, `submit`, `score`, `baseline` and `noise` all go
through here and none of them re-implements a stage.

    request.py   1. the request: run folder, the candidate's copy, seed, environment, feed, journal
    train.py     2. training on a backend, watched from outside (output lines, the feed's clock)
    evaluate.py  3. the verified evaluation: the scorer and two model servers on the same backend
    judge.py     4. status, reason, metrics and flags (trust follows from them: harness.record)
    hardware.py  5. the device's label, calibration and telemetry; normalization against the class
    finish.py    6. the record, written once (result.json, the store), the journal ended

    once.py      one run through all six (`harness run`)
    seeds.py     several seeds of one candidate, with the export-failure fallback (submit, baseline, noise)
    rescore.py   the evaluate and judge stages again for a finished run (`harness score`)
    refuse.py    the record of a candidate refused before any run (harness ci: missing, binary, invalid)
    backend.py   which backend, image and container runtime a command's runs get
"""

from harness.pipeline.backend import chosen_runtime, default_image, make_backend
from harness.pipeline.once import execute_run
from harness.pipeline.request import RunError, RunOptions

__all__ = ["RunError", "RunOptions", "chosen_runtime", "default_image", "execute_run", "make_backend"]

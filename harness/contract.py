"""The contract in one place: what a run is given (its HARNESS_* environment), the names of the files in
a run folder, and the exit codes of the CLI. Every module that needs one of these imports it from here;
tests/test_contract.py checks docs/design.md and fixed/prepare.py against it.

fixed/ is not part of the package (it runs inside the candidate's container with nothing of the harness
installed), so fixed/prepare.py spells the variable names itself; the test keeps the two in step.
"""

from __future__ import annotations

# --- the environment of a run (harness -> fixed/prepare.py -> train.py) ------------------------------

ENV_BENCHMARK = "HARNESS_BENCHMARK"
ENV_DATA_DIR = "HARNESS_DATA_DIR"
ENV_TIME_BUDGET = "HARNESS_TIME_BUDGET"
ENV_SEED = "HARNESS_SEED"
ENV_PEAK_FLOPS = "HARNESS_PEAK_FLOPS"
ENV_MODEL_HINT = "HARNESS_MODEL_HINT"
ENV_OUT_DIR = "HARNESS_OUT_DIR"
ENV_EVAL_MODE = "HARNESS_EVAL_MODE"
ENV_FEED = "HARNESS_FEED"

# name -> meaning; docs/design.md's environment table lists exactly these.
RUN_ENV = {
    ENV_BENCHMARK: "benchmark name, e.g. `tiny`",
    ENV_DATA_DIR: "the benchmark's data cache (holds `manifest.json`, `tokenizer/`, and `val/` only in "
                  "compatibility mode; the train shards are never mounted)",
    ENV_TIME_BUDGET: "training budget in seconds (float)",
    ENV_SEED: "the seed the harness chose for this run (int)",
    ENV_PEAK_FLOPS: "peak dense FLOP/s of the device the run uses, in the dtype the baseline trains in; "
                    "absent or `unknown` when not known",
    ENV_MODEL_HINT: "JSON object: the benchmark's model-size hint",
    ENV_OUT_DIR: "the only writable directory of the run",
    ENV_EVAL_MODE: "`export` in verified mode: `evaluate_bpb` exports the model to `HARNESS_OUT_DIR` "
                   "(`model.pt2`, `export.json`) and returns NaN; the val split is not mounted",
    ENV_FEED: "the folder holding the harness's data-feed socket (`feed.sock`): `make_dataloader(..., "
              "\"train\")` gets its rows from it",
}
EVAL_MODE_EXPORT = "export"

# --- the files of a run folder (runs/<run id>/) ------------------------------------------------------

RUN_TRAIN_PY = "train.py"  # the copy the run sees (the original cannot change under it)
RUN_LOG = "log.txt"  # the capped log: head and tail of everything the run printed
RUN_RESULT = "result.json"  # the record, written once at the end (harness/schemas/result.schema.json)
RUN_JOURNAL = "journal.json"  # present while the run's harness owns it (harness/journal.py)
RUN_TELEMETRY = "telemetry.jsonl"  # the NVML series, sampled from outside the run
RUN_OUT = "out"  # the run's only writable folder (a size-capped tmpfs in a container)
RUN_FEED = "feed"  # the feed's socket folder
FEED_SOCKET = "feed.sock"
OUT_EXPORT_INFO = "export.json"  # what prepare.export_model says about the export
OUT_MODEL = "model.pt2"  # the exported program
RUN_EVAL = "eval"  # the verified evaluation: the scorer's folder ...
EVAL_OUT = "eval.json"  # ... its verdict, in eval/out/
EVAL_SOCKET_DIR = "sock"  # ... the scorer's socket folder (eval/sock/model.sock)
EVAL_SOCKET = "model.sock"

RUN_FILES = {
    RUN_TRAIN_PY: "the candidate, copied before the run starts",
    RUN_LOG: "the run's output, capped (head and tail)",
    RUN_RESULT: "the record, written once when the run (and its submission's decision) ends",
    RUN_JOURNAL: "the journal: exists while a harness process owns the run",
    RUN_TELEMETRY: "NVML samples taken from outside the run",
    f"{RUN_OUT}/": "the run's only writable folder; holds `export.json` and `model.pt2` in verified mode",
    f"{RUN_FEED}/": "the data feed's socket",
    f"{RUN_EVAL}/": "the verified evaluation: `out/eval.json` (the scorer's verdict), `sock/`, `model-a/`, "
                    "`model-b/`",
}

# --- exit codes of the CLI ---------------------------------------------------------------------------

EXIT_OK = 0  # success: the run ended ok, the submission was kept, the file is valid
EXIT_FAILED = 1  # the thing checked or run failed: a run not ok, a discard, an invalid file, a build error
EXIT_USAGE = 2  # the command could not start: bad arguments, unprepared data, a missing input file

EXIT_CODES = {
    EXIT_OK: "success (a run ended ok, a submission was kept, a file is valid)",
    EXIT_FAILED: "the thing checked or run failed (a run not ok, a discard, an invalid file)",
    EXIT_USAGE: "the command could not start (bad arguments, an unknown benchmark or backend, unprepared data, a "
                "missing input file)",
}

"""Verified evaluation of a finished training run: the exported model is scored by fixed/evaluate.py (the
scorer: fixed code, the val data, nothing of the candidate's) from the logits of two model servers
(fixed/model_server.py running the candidate's program, without any data), each in a fresh run
(container) of its own, joined by a Unix socket.

Training in verified mode sees the train split and the tokenizer only (HARNESS_EVAL_MODE=export); its
evaluate_bpb exports the model instead of scoring it. This module runs the evaluator and folds its
verdict into the training run's result: trust "verified" with the evaluator's val_bpb, status
"invalid" when the causality probe fails, and the export error when the model could not be exported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, ProcessOutcome, RunRequest
from harness.benchmarks import Benchmark
from harness.result import RunResult

# What training sees of the data cache: never the train shards (the harness's feed serves them, see
# harness/feed.py); in verified mode never the val split either; compat mode scores itself on val.
TRAINING_ENTRIES = ["manifest.json", "tokenizer"]
COMPAT_ENTRIES = ["manifest.json", "tokenizer", "val"]
EXPORT_ENV = {"HARNESS_EVAL_MODE": "export"}
# The scorer (fixed code, with the val split) listens on a socket in a folder of its own (writable for it,
# read-only for the servers); two model servers (the candidate's program, no data at all) connect to it
# from runs of their own.
SCORER_COMMAND = ["{python}", "{fixed}/evaluate.py", "--socket", "{sock}/model.sock", "--out", "{out}/eval.json"]
MODEL_SERVER_COMMAND = ["{python}", "{fixed}/model_server.py", "--program", "{export}/model.pt2",
                        "--socket", "{sock}/model.sock", "--role", "{role}"]
MODEL_SERVERS = ("a", "b")
SERVER_GONE_GRACE_S = 10.0  # a server ended, the scorer still runs: past this the scorer is stopped


EXPORT_KEYS = ("ok", "error", "file", "seq_len", "vocab_size", "dynamic_batch", "batch", "torch", "device",
               "sha256", "bytes", "seconds")
EXPORT_INFO_MAX_BYTES = 64 * 1024
# A score this far below the benchmark's entropy floor cannot come from a model that did not see the
# val text (finite-sample fluctuation of the tiny val set is ~0.003 bits per byte).
FLOOR_TOLERANCE = 0.02


def export_info(run_dir: Path) -> dict[str, Any] | None:
    """What prepare.export_model wrote in the run's output folder (None: evaluate_bpb was never called).

    The folder is the candidate's: the file is opened without following links, its size is capped,
    and only the known keys are kept."""
    path = Path(run_dir) / "out" / "export.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(EXPORT_INFO_MAX_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= EXPORT_INFO_MAX_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    info = {k: doc.get(k) for k in EXPORT_KEYS}
    info["ok"] = info["ok"] is True and (Path(run_dir) / "out" / "model.pt2").is_file()
    if isinstance(info["error"], str):
        info["error"] = info["error"][:4000]
    return info


def evaluator_requests(train: RunRequest, bench: Benchmark) -> tuple[RunRequest, list[RunRequest]]:
    """The scorer's run and the two model servers' runs of one verified evaluation."""
    eval_dir = train.run_dir / "eval"
    (eval_dir / "out").mkdir(parents=True, exist_ok=True)
    (eval_dir / "out" / "eval.json").unlink(missing_ok=True)  # a re-score never reads an old verdict
    sock_dir = eval_dir / "sock"
    sock_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in train.env.items() if k not in EXPORT_ENV}
    env["HARNESS_OUT_DIR"] = str(eval_dir / "out")
    cancel = threading.Event()
    scorer = RunRequest(
        run_id=train.run_id + "-eval", train_py=train.train_py, benchmark=bench, data_dir=train.data_dir,
        fixed_dir=train.fixed_dir, run_dir=eval_dir, env=env, hard_timeout_s=bench.eval_timeout_s,
        gpu_uuids=list(train.gpu_uuids), log_cap_bytes=train.log_cap_bytes, command=list(SCORER_COMMAND),
        rw_mounts={"sock": sock_dir}, data_entries=None, mount_train_py=False, cancel=cancel)
    servers = []
    for role in MODEL_SERVERS:
        model_dir = eval_dir / f"model-{role}"
        (model_dir / "out").mkdir(parents=True, exist_ok=True)
        command = [part.replace("{role}", role) for part in MODEL_SERVER_COMMAND]
        servers.append(RunRequest(
            run_id=f"{train.run_id}-model-{role}", train_py=train.train_py, benchmark=bench, data_dir=train.data_dir,
            fixed_dir=train.fixed_dir, run_dir=model_dir,
            env={"HARNESS_OUT_DIR": str(model_dir / "out"), "HARNESS_BENCHMARK": bench.name},
            hard_timeout_s=bench.eval_timeout_s, gpu_uuids=list(train.gpu_uuids), log_cap_bytes=train.log_cap_bytes,
            command=command, extra_mounts={"export": train.run_dir / "out", "sock": sock_dir},
            data_entries=[], mount_train_py=False, cancel=cancel))
    return scorer, servers


def _log_tail(path: Path, n: int = 500) -> str:
    try:
        return path.read_text(errors="replace")[-2000:].strip()[-n:]
    except OSError:
        return ""


def run_evaluator(train: RunRequest, bench: Benchmark, backend: Backend,
                  requests: tuple[RunRequest, list[RunRequest]] | None = None) -> dict[str, Any]:
    """Run the scorer and the two model servers at once; the scorer's verdict, or an error saying what went
    wrong. The scorer runs in this thread (Ctrl-C reaches it); when it ends, the servers are cancelled.
    requests: evaluator_requests(train, bench), or a variant of them (tests play a hostile server)."""
    scorer, servers = requests or evaluator_requests(train, bench)
    scorer = dataclasses.replace(scorer, cancel=threading.Event())  # its own: a dead server ends the scorer
    outcomes: dict[str, Any] = {}
    early: list[str] = []  # servers that ended while the scorer still waited for them

    def serve(req: RunRequest) -> None:
        try:
            outcomes[req.run_id] = backend.execute(req, lambda _line: None)
        except Exception as e:  # noqa: BLE001 - a backend must not raise; if it does, the scorer still ends
            outcomes[req.run_id] = e
        # An honest server ends only after the scorer's last word; then the scorer is done within moments.
        # A server that ended before (a crash, a refused start) must not leave the scorer waiting.
        if not scorer.cancel.wait(SERVER_GONE_GRACE_S):
            early.append(f"model server {req.run_id[-1]} ended before the evaluation did: "
                         f"{_log_tail(req.run_dir / 'log.txt', 300)}")
            scorer.cancel.set()

    threads = [threading.Thread(target=serve, args=(req,), name=f"harness-{req.run_id}", daemon=True)
               for req in servers]
    for t in threads:
        t.start()
    try:
        outcome = backend.execute(scorer, lambda _line: None)
    finally:
        scorer.cancel.set()
        for req in servers:
            if req.cancel is not None:
                req.cancel.set()
        for t in threads:
            t.join(60)
    path = scorer.run_dir / "out" / "eval.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        why = outcome.infra_error or ("timed out" if outcome.timed_out else f"exit code {outcome.exit_code}")
        if early and outcome.kill_reason == "cancelled":
            result = {"ok": False, "error": "; ".join(early), "server_lost": True}
        else:
            result = {"ok": False, "error": f"the scorer produced no result ({why}): {_log_tail(outcome.log_path)}",
                      "timed_out": outcome.timed_out}
    server_infra = [o.infra_error for o in outcomes.values() if isinstance(o, ProcessOutcome) and o.infra_error]
    if not result.get("ok") and not early and (result.get("server_lost") or result.get("server_missing")):
        # The model side failed (crash, OOM, refused start): its own log says why.
        tails = [f"model server {req.run_id[-1]}: {_log_tail(req.run_dir / 'log.txt', 300)}" for req in servers]
        result["error"] = f"{result.get('error')}; " + " | ".join(tails)
    result["seconds_observed"] = round(outcome.ended_at - outcome.started_at, 2)
    result["log_path"] = str(outcome.log_path)
    result["server_logs"] = [str(req.run_dir / "log.txt") for req in servers]
    result["backend"] = outcome.backend
    # The runtime each container of the evaluation ran under (scorer and both model servers), as started.
    result["runtimes"] = sorted({o.runtime for o in [outcome, *outcomes.values()]
                                 if isinstance(o, ProcessOutcome) and getattr(o, "runtime", None)})
    result["infra_error"] = outcome.infra_error or (server_infra[0] if server_infra and not result.get("ok") else None)
    result["aborted"] = outcome.aborted
    return result


def apply_verification(result: RunResult, export: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> None:
    """Fold the export and the evaluator's verdict into the training run's result."""
    reported = result.metrics.get("val_bpb")
    result.metrics["reported_val_bpb"] = reported if reported is None or math.isfinite(reported) else None
    result.evaluation = {"mode": "verified", "export": export, "evaluator": evaluation,
                         "training_status": result.status}
    if result.status != "ok":
        return  # a crash, timeout, NaN loss ... keeps its status; nothing was scored
    if export is None:
        result.status, result.reason = "crash", "train.py never called evaluate_bpb, so there is no model to score"
        result.metrics["val_bpb"] = None
        return
    if not export.get("ok"):
        # Not scored: the caller may fall back to a self-reported compatibility run, which never
        # counts toward a verified decision.
        result.metrics["val_bpb"] = None
        return
    if evaluation is None or not evaluation.get("ok"):
        probe = (evaluation or {}).get("causality_probe") or {}
        if evaluation and evaluation.get("aborted"):
            result.status, result.reason = "aborted", "interrupted during the verified evaluation"
        elif (probe and not probe.get("ok")) or (evaluation and evaluation.get("invalid")):
            result.status, result.reason = "invalid", evaluation.get("error")
        elif evaluation and evaluation.get("nonfinite"):
            result.status, result.reason = "nan", evaluation["error"]
        elif evaluation and evaluation.get("timed_out"):
            result.status, result.reason = "timeout", f"verified evaluation: {evaluation.get('error')}"
        elif evaluation and evaluation.get("infra_error"):
            result.status, result.reason = "infra_error", f"verified evaluation: {evaluation['infra_error']}"
        else:
            result.status = "crash"
            result.reason = f"verified evaluation failed: {(evaluation or {}).get('error')}"
        result.metrics["val_bpb"] = None
        return
    result.metrics["val_bpb"] = evaluation["val_bpb"]
    # Scored by fixed code either way; "verified" also needs training that could not reach the val split.
    result.trust = "verified" if result.isolated else "unisolated"
    result.timings.eval_s = evaluation.get("seconds_observed")


def check_floor(result: RunResult) -> None:
    """A score below the benchmark's true entropy floor proves that the val text leaked: invalid."""
    floor = result.provenance["benchmark"].get("entropy_floor_bpb")
    bpb = result.metrics.get("val_bpb")
    if result.status == "ok" and floor is not None and bpb is not None and bpb < floor - FLOOR_TOLERANCE:
        result.status = "invalid"
        result.reason = (f"val_bpb {bpb:.4f} is below the benchmark's entropy floor {floor:.4f}: no model can do "
                         "that without seeing the val text (leakage)")


def scored_by_fixed_code(result: RunResult) -> bool:
    """An ok run whose score the fixed evaluator computed (not train.py's own print)."""
    return (result.status == "ok" and result.val_bpb is not None
            and (result.evaluation or {}).get("mode") == "verified")


class RescoreError(RuntimeError):
    """The run folder cannot be re-scored."""


def rescore(run_dir: Path, bench: Benchmark, backend: Backend, data_dir: Path, fixed_dir: Path) -> RunResult:
    """Score a finished verified run again from its exported model, with today's fixed evaluator."""
    run_dir = Path(run_dir)
    try:
        result = RunResult.from_dict(json.loads((run_dir / "result.json").read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise RescoreError(f"{run_dir}: no readable result.json ({e})") from None
    export = export_info(run_dir)
    if export is None:
        raise RescoreError(f"{run_dir}: no exported model (out/export.json): only verified runs can be re-scored")
    # Only a run whose training ended ok was (or should have been) decided by the evaluator.
    scored_before = (result.evaluation or {}).get("training_status") == "ok"
    if not scored_before:
        raise RescoreError(f"{run_dir}: the run ended with status {result.status} ({result.reason}): nothing to score")
    gpu = (result.hardware or {}).get("gpu") or {}
    train = RunRequest(run_id=result.run_id, train_py=run_dir / "train.py", benchmark=bench, data_dir=data_dir,
                       fixed_dir=fixed_dir, run_dir=run_dir, env=_rescore_env(result, bench, data_dir, run_dir),
                       gpu_uuids=[gpu["uuid"]] if gpu.get("uuid") else [])
    result.status, result.reason = "ok", None
    result.metrics["val_bpb"] = result.metrics.get("reported_val_bpb")
    evaluation = run_evaluator(train, bench, backend) if export.get("ok") else None
    previous = result.evaluation or {}
    apply_verification(result, export, evaluation)
    check_floor(result)
    result.evaluation = {**{k: v for k, v in previous.items() if k not in ("export", "evaluator")},
                         **result.evaluation, "rescored": True}
    return result


def _rescore_env(result: RunResult, bench: Benchmark, data_dir: Path, run_dir: Path) -> dict[str, str]:
    return {"HARNESS_BENCHMARK": bench.name, "HARNESS_DATA_DIR": str(data_dir),
            "HARNESS_SEED": str(result.provenance["seed"]), "HARNESS_OUT_DIR": str(run_dir / "out")}

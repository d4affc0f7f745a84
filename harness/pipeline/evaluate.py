"""Stage 3, the verified evaluation: the exported model is scored by fixed/evaluate.py (the scorer: fixed
code, the val data, nothing of the candidate's) from the logits of two model servers (fixed/model_server.py
running the candidate's program, without any data), each in a fresh run (container) of its own on the same
backend as training, joined by a Unix socket.

Training in verified mode sees the train split and the tokenizer only (HARNESS_EVAL_MODE=export); its
evaluate_bpb exports the model instead of scoring it. What the verdict means for the run's status is
decided in harness/pipeline/judge.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

from harness import contract
from harness.backends.base import Backend, ProcessOutcome, RunRequest
from harness.benchmarks import Benchmark
from harness.pipeline.request import EXPORT_ENV
from harness.record import Export

# The scorer (fixed code, with the val split) listens on a socket in a folder of its own (writable for it,
# read-only for the servers); two model servers (the candidate's program, no data at all) connect to it
# from runs of their own.
SCORER_COMMAND = ["{python}", "{fixed}/evaluate.py", "--socket", "{sock}/model.sock", "--out", "{out}/eval.json"]
MODEL_SERVER_COMMAND = ["{python}", "{fixed}/model_server.py", "--program", "{export}/model.pt2",
                        "--socket", "{sock}/model.sock", "--role", "{role}"]
MODEL_SERVERS = ("a", "b")
SERVER_GONE_GRACE_S = 10.0  # a server ended, the scorer still runs: past this the scorer is stopped


EXPORT_INFO_MAX_BYTES = 64 * 1024


def export_info(run_dir: Path) -> Export | None:
    """What prepare.export_model wrote in the run's output folder (None: evaluate_bpb was never called).

    The folder is the candidate's: the file is opened without following links, its size is capped,
    and only the known keys are kept."""
    path = Path(run_dir) / contract.RUN_OUT / contract.OUT_EXPORT_INFO
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(EXPORT_INFO_MAX_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= EXPORT_INFO_MAX_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    info = Export.from_doc(doc)
    error = info.error[:4000] if isinstance(info.error, str) else None
    ok = info.ok and (Path(run_dir) / contract.RUN_OUT / contract.OUT_MODEL).is_file()
    return dataclasses.replace(info, ok=ok, error=error, **_typed(info))


def _typed(info: Export) -> dict[str, Any]:
    """The candidate wrote these: a value of the wrong type is dropped, never trusted."""
    kinds = {"file": str, "seq_len": int, "vocab_size": int, "dynamic_batch": bool, "batch": int, "torch": str,
             "device": str, "sha256": str, "bytes": int, "seconds": (int, float)}
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        value = getattr(info, name)
        bad = value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool)))
        out[name] = None if bad else (value[:200] if isinstance(value, str) else value)
    return out


def evaluator_requests(train: RunRequest, bench: Benchmark) -> tuple[RunRequest, list[RunRequest]]:
    """The scorer's run and the two model servers' runs of one verified evaluation."""
    eval_dir = train.run_dir / contract.RUN_EVAL
    (eval_dir / contract.RUN_OUT).mkdir(parents=True, exist_ok=True)
    (eval_dir / contract.RUN_OUT / contract.EVAL_OUT).unlink(missing_ok=True)  # a re-score never reads an old verdict
    sock_dir = eval_dir / contract.EVAL_SOCKET_DIR
    sock_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in train.env.items() if k not in EXPORT_ENV}
    env[contract.ENV_OUT_DIR] = str(eval_dir / contract.RUN_OUT)
    cancel = threading.Event()
    scorer = RunRequest(
        run_id=train.run_id + "-eval", train_py=train.train_py, benchmark=bench, data_dir=train.data_dir,
        fixed_dir=train.fixed_dir, run_dir=eval_dir, env=env, hard_timeout_s=bench.eval_timeout_s,
        gpu_uuids=list(train.gpu_uuids), log_cap_bytes=train.log_cap_bytes, command=list(SCORER_COMMAND),
        rw_mounts={"sock": sock_dir}, data_entries=None, mount_train_py=False, cancel=cancel,
        cpuset=train.cpuset)  # a pool member's or a Slurm job's CPUs: the evaluation stays on them too
    servers = []
    for role in MODEL_SERVERS:
        model_dir = eval_dir / f"model-{role}"
        (model_dir / contract.RUN_OUT).mkdir(parents=True, exist_ok=True)
        command = [part.replace("{role}", role) for part in MODEL_SERVER_COMMAND]
        servers.append(RunRequest(
            run_id=f"{train.run_id}-model-{role}", train_py=train.train_py, benchmark=bench, data_dir=train.data_dir,
            fixed_dir=train.fixed_dir, run_dir=model_dir,
            env={contract.ENV_OUT_DIR: str(model_dir / contract.RUN_OUT), contract.ENV_BENCHMARK: bench.name},
            hard_timeout_s=bench.eval_timeout_s, gpu_uuids=list(train.gpu_uuids), log_cap_bytes=train.log_cap_bytes,
            command=command, extra_mounts={"export": train.run_dir / contract.RUN_OUT, "sock": sock_dir},
            data_entries=[], mount_train_py=False, cancel=cancel, cpuset=train.cpuset))
    return scorer, servers


def _log_tail(path: Path, n: int = 500) -> str:
    try:
        return path.read_text(errors="replace")[-2000:].strip()[-n:]
    except OSError:
        return ""


def run_evaluator(train: RunRequest, bench: Benchmark, backend: Backend,
                  requests: tuple[RunRequest, list[RunRequest]] | None = None,
                  abort: threading.Event | None = None) -> dict[str, Any]:
    """Run the scorer and the two model servers at once; the scorer's verdict, or an error saying what went
    wrong. The scorer runs in this thread (Ctrl-C reaches it); when it ends, the servers are cancelled.
    requests: evaluator_requests(train, bench), or a variant of them (tests play a hostile server).
    abort: a pool's stop (Ctrl-C reaches only the main thread): once set, the evaluation ends, aborted."""
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
                         f"{_log_tail(req.run_dir / contract.RUN_LOG, 300)}")
            scorer.cancel.set()

    threads = [threading.Thread(target=serve, args=(req,), name=f"harness-{req.run_id}", daemon=True)
               for req in servers]
    for t in threads:
        t.start()
    if abort is not None:
        threading.Thread(target=_cancel_on, args=(abort, scorer.cancel), name="harness-abort", daemon=True).start()
    try:
        outcome = backend.execute(scorer, lambda _line: None)
    finally:
        scorer.cancel.set()
        for req in servers:
            if req.cancel is not None:
                req.cancel.set()
        for t in threads:
            t.join(60)
    path = scorer.run_dir / contract.RUN_OUT / contract.EVAL_OUT
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
        tails = [f"model server {req.run_id[-1]}: {_log_tail(req.run_dir / contract.RUN_LOG, 300)}" for req in servers]
        result["error"] = f"{result.get('error')}; " + " | ".join(tails)
    result["seconds_observed"] = round(outcome.ended_at - outcome.started_at, 2)
    result["log_path"] = str(outcome.log_path)
    result["server_logs"] = [str(req.run_dir / contract.RUN_LOG) for req in servers]
    result["backend"] = outcome.backend
    result["isolated"] = all(o.isolated for o in [outcome, *outcomes.values()] if isinstance(o, ProcessOutcome))
    # The runtime each container of the evaluation ran under (scorer and both model servers), as started.
    result["runtimes"] = sorted({o.runtime for o in [outcome, *outcomes.values()]
                                 if isinstance(o, ProcessOutcome) and getattr(o, "runtime", None)})
    result["infra_error"] = outcome.infra_error or (server_infra[0] if server_infra and not result.get("ok") else None)
    result["aborted"] = outcome.aborted or (abort is not None and abort.is_set())
    return result


def _cancel_on(abort: threading.Event, cancel: threading.Event) -> None:
    """Set cancel once abort is set, or return once cancel is set (the evaluation ended by itself)."""
    while not cancel.is_set():
        if abort.wait(0.25):
            cancel.set()
            return

"""Attacks on the verified evaluation, each tried for real: a doctored archive (pickle, guards code,
sympy expressions, forbidden operators), look-ahead on a share of rows or positions chosen by content,
and a model server that lies on the wire (bad shapes, dtypes, NaN, floods, sleeps, hang-ups).

Each test asserts the verdict (invalid, nan, timeout or error: never a score) and that no code of the
candidate ran where it must not."""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO, load_prepare
from tests.test_verified_eval import TinyLM, evaluate_in_container_style

sys.path.insert(0, str(REPO / "fixed"))
import archive_check  # noqa: E402
import wire  # noqa: E402


class OpensAFile:
    """Unpickling this creates `path`: proof that the loader ran our code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def honest_export(tmp_path_factory, tiny_cache):
    out = tmp_path_factory.mktemp("honest")
    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(TinyLM(p.VOCAB_SIZE), out)
    assert info["ok"], info["error"]
    return out / "model.pt2", p.evaluate_bpb(TinyLM(p.VOCAB_SIZE), p.Tokenizer.from_directory(), 64)


def rewrite(src: Path, dest: Path, change) -> Path:
    """A copy of the archive with change(rel, data) -> new data (None: drop) applied to every entry."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dest, "w") as out:
        for info in z.infolist():
            top, _, rel = info.filename.partition("/")
            data = change(rel, z.read(info))
            if data is not None:
                out.writestr(info.filename, data)
    return dest


def with_graph(src: Path, dest: Path, edit) -> Path:
    def change(rel, data):
        if rel == "models/model.json":
            doc = json.loads(data)
            edit(doc)
            return json.dumps(doc).encode()
        return data
    return rewrite(src, dest, change)


def test_a_pickled_weight_would_run_code_and_is_refused(honest_export, tiny_cache, tmp_path):
    marker = tmp_path / "pwned"

    def change(rel, data):
        if rel == "data/weights/model_weights_config.json":
            doc = json.loads(data)
            first = next(iter(doc["config"].values()))
            first["use_pickle"] = True
            return json.dumps(doc).encode()
        if rel == "data/weights/weight_0":
            return pickle.dumps(OpensAFile(marker))
        return data

    evil = rewrite(honest_export[0], tmp_path / "evil.pt2", change)
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises afterwards, the code already ran
        torch.export.load(str(evil))
    assert marker.exists(), "the naive loader should have run the payload (the attack is real)"
    marker.unlink()
    problems = archive_check.check_archive(evil)
    assert any("stored with pickle" in p and "model.emb.weight" in p for p in problems), problems
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, None, tmp_path, program=evil)
    assert proc.returncode == 1 and result["invalid"] and "pickle" in result["error"]
    assert "val_bpb" not in result and not marker.exists()


def test_pickled_sample_inputs_never_run(honest_export, tiny_cache, tmp_path):
    marker = tmp_path / "pwned"
    evil = rewrite(honest_export[0], tmp_path / "evil.pt2",
                   lambda rel, data: pickle.dumps(OpensAFile(marker)) if rel == "data/sample_inputs/model.pt" else data)
    try:
        torch.export.load(str(evil))
    except Exception:  # noqa: BLE001 - it may fail after the payload ran
        pass
    assert marker.exists(), "torch.export.load unpickles the sample inputs (the attack is real)"
    marker.unlink()
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, None, tmp_path, program=evil)
    assert not marker.exists()  # the servers load a sanitized copy whose sample inputs are our own
    assert proc.returncode == 0 and result["val_bpb"] == pytest.approx(honest_export[1], rel=1e-5)


@pytest.mark.parametrize("edit, expect", [
    (lambda d: d.__setitem__("guards_code", ["__import__('os').system('true')"]), "guards_code"),
    (lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__("target", "torch.ops.aten.from_file.default"),
     "from_file"),
    (lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__("target", "builtins.exec"), "builtins.exec"),
    (lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__("target", "torch.ops.higher_order.cond"),
     "higher_order"),
    (lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__("target", "torch.ops.aten.bernoulli.default"),
     "random"),
    (lambda d: d["graph_module"]["graph"]["sym_int_values"].__setitem__(
        "s0", {"as_expr": {"expr_str": "__import__('os').getpid()"}}), "symbolic expression"),
    (lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__("name", "x; import os"), "plain identifier"),
    (lambda d: d.__setitem__("verifiers", ["EVIL"]), "verifier"),
])
def test_a_doctored_graph_is_refused_naming_what(honest_export, tmp_path, edit, expect):
    evil = with_graph(honest_export[0], tmp_path / "evil.pt2", edit)
    problems = archive_check.check_archive(evil)
    assert problems and any(expect in p for p in problems), problems


def test_unknown_entries_are_refused_by_name(honest_export, tmp_path):
    src = honest_export[0]
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(evil, "w") as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info))
        out.writestr("model/extra/payload.pkl", b"x")
        out.writestr("model/data/constants/custom_obj_0", b"x")
    problems = archive_check.check_archive(evil)
    assert any("model/extra/payload.pkl" in p for p in problems)
    assert any("custom_obj_0" in p for p in problems)


def test_the_baseline_archive_passes_the_check(tmp_path, tiny_cache):
    # The allow-list must let an ordinary model through: the honest toy is checked in the other tests, the
    # baseline's operators (rms_norm, sdpa, ...) here through its own export.
    out = tmp_path / "out"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")},
           "HARNESS_DATA_DIR": str(tiny_cache.data_dir), "HARNESS_TIME_BUDGET": "1", "HARNESS_EVAL_MODE": "export",
           "HARNESS_OUT_DIR": str(out), "PYTHONPATH": str(REPO / "fixed")}
    proc = subprocess.run([sys.executable, str(REPO / "submissions" / "baseline" / "train.py")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert archive_check.check_archive(out / "model.pt2") == []


# --- look-ahead on a share chosen by content --------------------------------------------------------

class PeeksOnSomeRows(TinyLM):
    """Looks one token ahead on the rows whose first tokens hash into 1/k of the buckets."""

    def __init__(self, vocab, k):
        super().__init__(vocab)
        self.k = k

    def forward(self, idx, targets=None, reduction="mean"):
        logits = super().forward(idx)
        gate = ((idx[:, 1:9].sum(dim=1) % self.k) == 0).float()[:, None, None]
        peek = F.one_hot(torch.roll(idx, -1, dims=1), logits.size(-1)).float() * 30.0
        return logits + gate * peek


class PeeksAtSomePositions(TinyLM):
    """Looks one token ahead at the positions whose own token falls in 1/k of the vocabulary."""

    def __init__(self, vocab, k):
        super().__init__(vocab)
        self.k = k

    def forward(self, idx, targets=None, reduction="mean"):
        logits = super().forward(idx)
        gate = ((idx % self.k) == 0).float()[..., None]
        peek = F.one_hot(torch.roll(idx, -1, dims=1), logits.size(-1)).float() * 30.0
        return logits + gate * peek


@pytest.mark.parametrize("model_cls, k", [(PeeksOnSomeRows, 2), (PeeksOnSomeRows, 16),
                                          (PeeksAtSomePositions, 4), (PeeksAtSomePositions, 32)])
def test_look_ahead_on_a_share_chosen_by_content_is_caught(tiny_cache, tmp_path, model_cls, k):
    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(model_cls(p.VOCAB_SIZE, k), tmp_path / "out")
    assert info["ok"], info["error"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    assert proc.returncode == 1 and result.get("invalid"), result
    assert "non-causal" in result["error"] and not result["causality_probe"]["ok"]
    assert "val_bpb" not in result


# --- a model server that lies on the wire --------------------------------------------------------

def run_scorer_against(tiny_cache, tmp_path, behave, timeout_s=2.0, hello=None):
    """The real scorer, and two fake model servers that act out `behave(sock, n_calls)`."""
    sock_path = tmp_path / "sock" / "model.sock"
    sock_path.parent.mkdir()
    out = tmp_path / "eval.json"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")},
           "HARNESS_DATA_DIR": str(tiny_cache.data_dir), "PYTHONPATH": str(REPO / "fixed")}
    scorer = subprocess.Popen([sys.executable, str(REPO / "fixed" / "evaluate.py"), "--socket", str(sock_path),
                               "--out", str(out), "--batch-timeout", str(timeout_s)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def server():
        try:
            s = wire.connect(str(sock_path), 60)
            wire.send_json(s, b"HELO", hello or {"ok": True, "batch": None})
            behave(s)
        except (OSError, wire.WireError):
            pass

    threads = [threading.Thread(target=server, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    stdout, _ = scorer.communicate(timeout=120)
    return scorer.returncode, json.loads(out.read_text()), stdout


def answer_with(make_logits):
    def behave(s):
        while True:
            kind, length = wire.recv_header(s)
            if kind != b"TOKS":
                return
            n, T = wire.TOKS_HEAD.unpack(bytes(wire.recv_exact(s, 8)))
            wire.recv_exact(s, 8 * n * T)
            code, logits = make_logits(n, T)
            head = wire.LOGI_HEAD.pack(code, *logits.shape)
            data = logits.contiguous().view(torch.uint8).numpy().tobytes()
            s.sendall(wire.HEADER.pack(b"LOGI", len(head) + len(data)) + head + data)
    return behave


@pytest.mark.parametrize("make_logits, field, words", [
    (lambda n, T: (0, torch.zeros(n, T, 100)), "invalid", "shape"),
    (lambda n, T: (0, torch.zeros(n, T - 1, 512)), "invalid", "shape"),
    (lambda n, T: (7, torch.zeros(n, T, 512)), "invalid", "dtype"),
    (lambda n, T: (0, torch.full((n, T, 512), float("nan"))), "nonfinite", "not finite"),
    (lambda n, T: (0, torch.full((n, T, 512), float("inf"))), "nonfinite", "not finite"),
])
def test_bad_logits_are_refused(tiny_cache, tmp_path, make_logits, field, words):
    code, result, _ = run_scorer_against(tiny_cache, tmp_path, answer_with(make_logits))
    assert code == 1 and result.get(field) and words in result["error"], result
    assert "val_bpb" not in result


def test_a_servers_hello_reaches_the_record_only_as_the_protocols_typed_fields(tiny_cache, tmp_path):
    hello = {"ok": 1, "batch": True, "invalid": "no", "device": "\x1b[2Jcpu" * 40, "load_s": float("nan"),
             "val_bpb": 0.01, "trust": "verified", "error": None}
    code, result, _ = run_scorer_against(tiny_cache, tmp_path, answer_with(lambda n, T: (0, torch.zeros(n, T, 512))),
                                         hello=hello)
    # "ok": 1 is not the protocol's true: the scorer refuses to score, and keeps none of the extra keys.
    assert code == 1 and "val_bpb" not in result, result
    hello["ok"] = True
    (tmp_path / "again").mkdir()
    code, result, _ = run_scorer_against(tiny_cache, tmp_path / "again", answer_with(
        lambda n, T: (0, torch.zeros(n, T, 512))), hello=hello)
    assert code == 0 and result["ok"], result
    for said in result["server_hello"]:
        assert set(said) == {"ok", "invalid", "error", "batch", "device", "load_s"}
        assert said["batch"] is None and said["invalid"] is False and said["load_s"] is None
        assert len(said["device"]) == 64
    assert result["val_bpb"] > 1  # uniform logits: an honest, poor score


def test_a_lying_frame_length_is_a_protocol_error(tiny_cache, tmp_path):
    def behave(s):
        wire.recv_header(s)
        s.sendall(wire.HEADER.pack(b"LOGI", 1 << 40) + wire.LOGI_HEAD.pack(0, 1, 1, 512))
        time.sleep(5)
    code, result, _ = run_scorer_against(tiny_cache, tmp_path, behave)
    assert code == 1 and not result["ok"] and ("protocol" in result["error"] or "shape" in result["error"])


def test_a_model_that_sleeps_per_batch_times_out(tiny_cache, tmp_path):
    def slow(n, T):
        time.sleep(3)
        return 0, torch.zeros(n, T, 512)
    code, result, _ = run_scorer_against(tiny_cache, tmp_path, answer_with(slow), timeout_s=1.0)
    assert code == 1 and result.get("timed_out") and "val_bpb" not in result


def test_a_server_that_hangs_up_is_an_error_not_a_score(tiny_cache, tmp_path):
    def behave(s):
        wire.recv_header(s)
        s.close()
    code, result, _ = run_scorer_against(tiny_cache, tmp_path, behave)
    assert code == 1 and result.get("server_lost") and "val_bpb" not in result


def test_uniform_logits_from_a_fake_server_score_log2_vocab(tiny_cache, tmp_path):
    # The wire itself is honest: zeros everywhere is the uniform distribution, whose BPB the scorer
    # computes from the data alone.
    code, result, _ = run_scorer_against(tiny_cache, tmp_path, answer_with(lambda n, T: (1, torch.zeros(n, T, 512, dtype=torch.bfloat16))))
    assert code == 0 and result["causality_probe"]["ok"], result
    p = load_prepare(tiny_cache.data_dir)
    expected = result["scored_tokens"] * math.log(512) / (math.log(2) * result["total_bytes"])
    assert result["val_bpb"] == pytest.approx(expected, rel=1e-6) and p.VOCAB_SIZE == 512


def test_a_server_that_dies_before_connecting_ends_the_evaluation_quickly(honest_export, tiny_cache, tiny_bench,
                                                                          tmp_path):
    from harness.backends.base import RunRequest
    from harness.backends.local import LocalBackend
    from harness.pipeline.request import run_env
    from harness.pipeline.evaluate import evaluator_requests, run_evaluator

    run_dir = tmp_path / "run"
    (run_dir / "out").mkdir(parents=True)
    (run_dir / "out" / "model.pt2").write_bytes(honest_export[0].read_bytes())
    train = RunRequest(run_id="20260101-000000-eeeeee", train_py=run_dir / "train.py", benchmark=tiny_bench,
                       data_dir=tiny_cache.data_dir, fixed_dir=REPO / "fixed", run_dir=run_dir,
                       env=run_env(tiny_bench, tiny_cache.data_dir, run_dir, 1.0, 1, None))
    scorer, servers = evaluator_requests(train, tiny_bench)
    servers[1].command = ["{python}", "-c", "print('crashing at start', flush=True); raise SystemExit(3)"]
    t0 = time.time()
    result = run_evaluator(train, tiny_bench, LocalBackend(), requests=(scorer, servers))
    assert time.time() - t0 < 90  # not the scorer's 240 s wait for a server that will never come
    assert not result["ok"] and result["server_lost"] and "crashing at start" in result["error"]


def _enum_hook_in_out_spec(d):
    sig = d["graph_module"]["module_call_graph"][0]["signature"]
    ctx = json.dumps({"__enum__": True, "fqn": "ctypes:cdll", "name": "/mnt/export/evil.so"})
    sig["out_spec"] = json.dumps([1, {"type": "builtins.tuple", "context": ctx,
                                      "children_spec": [{"type": None, "context": None, "children_spec": []}]}])


def _code_in_a_parameter_name(d):
    spec = next(s for s in d["graph_module"]["signature"]["input_specs"] if "parameter" in s)
    spec["parameter"]["parameter_name"] = '"+str(__import__("os").getpid())+"'


@pytest.mark.parametrize("edit, expect", [
    (_enum_hook_in_out_spec, "__enum__"),  # treespec json's object_hook imports and calls (dlopen via ctypes)
    (_code_in_a_parameter_name, "plain dotted name"),  # FX pastes it into generated Python source
    (lambda d: d["graph_module"]["module_call_graph"][0]["signature"].__setitem__(
        "forward_arg_names", ["idx=__import__('os').getpid()"]), "forward_arg_names"),
    (lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__("target", "torch.ops.aten.new_empty.default"),
     "touches files"),  # uninitialized memory would let a "pure" graph remember its last input
])
def test_code_paths_in_the_loader_itself_are_refused(honest_export, tmp_path, edit, expect):
    evil = with_graph(honest_export[0], tmp_path / "evil.pt2", edit)
    problems = archive_check.check_archive(evil)
    assert problems and any(expect in p for p in problems), problems

"""Verified evaluation: export in the run, score with fixed code elsewhere, reject non-causal models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO, load_prepare


class TinyLM(torch.nn.Module):
    """One attention layer over embeddings; causal unless told otherwise."""

    def __init__(self, vocab, dim=32, causal=True):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.head = torch.nn.Linear(dim, vocab)
        self.causal = causal

    def forward(self, idx, targets=None, reduction="mean"):
        h = self.emb(idx)
        q, k, v = self.qkv(h).unsqueeze(1).chunk(3, dim=-1)
        h = h + F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).squeeze(1)
        logits = self.head(h)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)


class Finished:
    """What the scorer process left: its exit code and output, and the model servers' outputs."""

    def __init__(self, returncode, stdout, servers):
        self.returncode, self.stdout, self.servers = returncode, stdout, servers


def evaluate_in_container_style(prepare_dir, export_dir, tmp_path, program=None):
    """Run the scorer and its two model servers as processes of their own, as the evaluator containers do:
    the scorer sees the data, the servers only the program and the socket."""
    sock = tmp_path / "sock" / "model.sock"
    sock.parent.mkdir(exist_ok=True)
    out = tmp_path / "eval.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    scorer = subprocess.Popen([sys.executable, str(REPO / "fixed" / "evaluate.py"), "--socket", str(sock), "--out",
                               str(out)], env={**base, "HARNESS_DATA_DIR": str(prepare_dir),
                                               "PYTHONPATH": str(REPO / "fixed")},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    servers = [subprocess.Popen([sys.executable, str(REPO / "fixed" / "model_server.py"), "--program",
                                 str(program or export_dir / "model.pt2"), "--socket", str(sock), "--role", role],
                                env={**base, "TMPDIR": str(tmp_path)}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for role in "ab"]
    try:
        stdout, _ = scorer.communicate(timeout=300)
    finally:
        outputs = []
        for s in servers:
            try:
                outputs.append(s.communicate(timeout=20)[0])
            except subprocess.TimeoutExpired:
                s.kill()
                outputs.append(s.communicate()[0])
    return Finished(scorer.returncode, stdout, outputs), json.loads(out.read_text())


def test_verified_bpb_equals_in_process(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir)
    model = TinyLM(p.VOCAB_SIZE)
    expected = p.evaluate_bpb(model, p.Tokenizer.from_directory(), 64)
    info = p.export_model(model, tmp_path / "out")
    assert info["ok"], info["error"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    assert proc.returncode == 0, proc.stdout + "".join(proc.servers)
    assert result["causality_probe"]["ok"]
    assert result["target_tokens"] == p.EVAL_TOKENS
    assert result["val_bpb"] == pytest.approx(expected, rel=1e-5)


def test_export_mode_defers_and_returns_nan(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir, HARNESS_EVAL_MODE="export", HARNESS_OUT_DIR=str(tmp_path / "o"))
    bpb = p.evaluate_bpb(TinyLM(p.VOCAB_SIZE), p.Tokenizer.from_directory(), 64)
    assert math.isnan(bpb)
    info = json.loads((tmp_path / "o" / "export.json").read_text())
    assert info["ok"] and (tmp_path / "o" / "model.pt2").stat().st_size == info["bytes"]


def test_non_causal_model_is_rejected_by_the_probe(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(TinyLM(p.VOCAB_SIZE, causal=False), tmp_path / "out")
    assert info["ok"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    assert proc.returncode == 1
    assert not result["ok"] and not result["causality_probe"]["ok"]
    assert "non-causal" in result["error"] and "val_bpb" not in result


def test_unexportable_model_reports_the_error(tiny_cache, tmp_path):
    class DataDependent(TinyLM):
        def forward(self, idx, targets=None, reduction="mean"):
            if idx.float().mean().item() > -1:  # Python control flow on data: export cannot trace it
                return super().forward(idx, targets, reduction)
            return None

    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(DataDependent(p.VOCAB_SIZE), tmp_path / "out")
    assert not info["ok"] and info["error"]
    assert json.loads((tmp_path / "out" / "export.json").read_text())["error"] == info["error"]


class PeeksOnRealBatches(TinyLM):
    """Looks one token ahead, but only when the batch's rows differ: a probe on one repeated row
    would see an honest model. The probe runs on the real scoring batch, so it sees the peek."""

    def forward(self, idx, targets=None, reduction="mean"):
        logits = super().forward(idx)
        gate = (idx[0] != idx[-1]).any().float()
        peek = F.one_hot(torch.roll(idx, -1, dims=1), logits.size(-1)).float() * 20.0
        return logits + gate * peek


def test_probe_on_real_batches_catches_a_gated_peek(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(PeeksOnRealBatches(p.VOCAB_SIZE), tmp_path / "out")
    assert info["ok"], info["error"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    assert proc.returncode == 1 and not result["causality_probe"]["ok"], result
    assert "non-causal" in result["error"]


class RewritesItsInput(TinyLM):
    """Overwrites the token tensor it is given: with shared storage it would rewrite the targets."""

    def forward(self, idx, targets=None, reduction="mean"):
        logits = super().forward(idx)
        idx.copy_(logits.argmax(dim=-1))
        return logits


class PadsVocabWithMinusInf(TinyLM):
    """An honest causal model whose padded vocabulary columns are masked with -inf."""

    def forward(self, idx, targets=None, reduction="mean"):
        logits = super().forward(idx)
        pad = torch.full((*logits.shape[:-1], 8), float("-inf"))
        return torch.cat([logits, pad], dim=-1)


def test_a_model_that_mutates_its_input_is_invalid(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(RewritesItsInput(p.VOCAB_SIZE), tmp_path / "out")
    assert info["ok"], info["error"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    # Either the export kept the mutation and the evaluator refuses the model, or the mutation is gone
    # (the graph is pure); never a score computed on rewritten targets.
    if result.get("invalid"):
        assert proc.returncode == 1 and "mutates" in result["error"]
    else:
        honest = p.evaluate_bpb(TinyLM(p.VOCAB_SIZE), p.Tokenizer.from_directory(), 64)
        assert result["val_bpb"] == pytest.approx(honest, rel=1e-5)


def test_minus_inf_padding_is_not_nan_or_non_causal(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir)
    model = PadsVocabWithMinusInf(p.VOCAB_SIZE)
    info = p.export_model(model, tmp_path / "out")
    assert info["ok"], info["error"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    assert proc.returncode == 0, result
    assert result["causality_probe"]["ok"]
    honest = p.evaluate_bpb(TinyLM(p.VOCAB_SIZE), p.Tokenizer.from_directory(), 64)
    assert result["val_bpb"] == pytest.approx(honest, rel=1e-5)  # -inf columns take no probability mass


class RemembersTheLastCall(TinyLM):
    """Keeps state between calls (a probe repeats the previous call's prefix): refused."""

    def __init__(self, vocab):
        super().__init__(vocab)
        self.register_buffer("last", torch.zeros(()))

    def forward(self, idx, targets=None, reduction="mean"):
        logits = super().forward(idx)
        self.last.copy_(idx.float().sum())
        return logits


def test_a_stateful_model_is_invalid(tiny_cache, tmp_path):
    p = load_prepare(tiny_cache.data_dir)
    info = p.export_model(RemembersTheLastCall(p.VOCAB_SIZE), tmp_path / "out")
    assert info["ok"], info["error"]
    proc, result = evaluate_in_container_style(tiny_cache.data_dir, tmp_path / "out", tmp_path)
    assert proc.returncode == 1 and result["invalid"] and "mutates" in result["error"]

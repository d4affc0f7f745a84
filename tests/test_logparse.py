"""Parsing progress lines, the summary block and crash tails."""

from __future__ import annotations

import math

from harness.logparse import parse_progress, parse_summary, saw_nan, saw_oom, traceback_tail

SUMMARY = """step noise
---
val_bpb:          0.997900
training_seconds: 300.1
total_seconds:    325.9
peak_vram_mb:     45060.2
mfu_percent:      39.80
total_tokens_M:   499.6
num_steps:        953
num_params_M:     50.3
depth:            8
"""


def test_summary_block():
    s = parse_summary(SUMMARY)
    assert (s.val_bpb, s.training_seconds, s.num_steps, s.depth, s.mfu_percent) == (0.9979, 300.1, 953, 8, 39.8)


def test_summary_unknown_mfu_and_last_block_wins():
    text = SUMMARY + "---\nval_bpb: 1.5\nmfu_percent:      unknown (peak FLOP/s not given)\n"
    s = parse_summary(text)
    assert s.val_bpb == 1.5 and s.mfu_percent is None and s.num_steps is None


def test_no_summary():
    assert parse_summary("hello\n---\nnot: a summary\n") is None
    assert parse_summary("") is None


def test_progress_line():
    p = parse_progress("progress step=42 elapsed=12.31 budget=60.0 loss=2.345678 lr_mult=1.000 tok_s=123456 mfu=12.34")
    assert (p.step, p.elapsed, p.budget, p.loss, p.tok_s, p.mfu) == (42, 12.31, 60.0, 2.345678, 123456, 12.34)
    assert p.extra == {"lr_mult": "1.000"}
    assert parse_progress("progress step=1 mfu=unknown").mfu is None
    assert parse_progress("step 1 loss 2") is None


def test_nan_detection():
    assert saw_nan("progress step=3 loss=nan\n", None)
    assert saw_nan("FAIL: loss is nan\n", None)
    s = parse_summary("---\nval_bpb: nan\n")
    assert math.isnan(s.val_bpb) and saw_nan("", s)
    assert not saw_nan("progress step=3 loss=2.0\n", parse_summary(SUMMARY))


def test_oom_and_traceback_tail():
    log = "a\nTraceback (most recent call last):\n  File x\nValueError: old\nmore\nTraceback (most recent call last):\n  File y\ntorch.OutOfMemoryError: CUDA out of memory.\n"
    assert saw_oom(log)
    tail = traceback_tail(log)
    assert tail.startswith("Traceback") and "File y" in tail and "old" not in tail
    assert traceback_tail("just\nlines\n") == "just\nlines"

"""fixed/calibrate.py output and its judgement against the class expectation."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from harness.hw.calibration import (
    SCRIPT,
    Calibration,
    calibration_command,
    judge_calibration,
    parse_calibration,
    parse_calibration_line,
)
from harness.hw.gpu_class import class_from_label, cpu_class_for
from harness.hw.profile import host_facts

H100 = class_from_label("H100-SXM-80GB·700W")  # bf16 989.5e12 x 0.70, bw 3.35e12 x 0.80


def _line(**kw) -> str:
    d = {"device": "cuda", "dtype": "bf16", "matmul_flops": 700e12, "mem_bw_bytes_s": 2.9e12, "seconds": 3.1,
         "device_name": "NVIDIA H100 80GB HBM3", "matmul_n": 8192}
    d.update(kw)
    return "calibration " + json.dumps(d)


def test_parse_line():
    c = parse_calibration_line(_line())
    assert (c.device, c.dtype, c.matmul_flops, c.mem_bw_bytes_s, c.seconds) == ("cuda", "bf16", 700e12, 2.9e12, 3.1)
    assert c.device_name.startswith("NVIDIA") and c.extra == {"matmul_n": 8192} and c.ok
    assert json.dumps(c.to_dict())
    with pytest.raises(ValueError):
        parse_calibration_line("progress step=1")
    with pytest.raises(ValueError):
        parse_calibration_line("calibration {not json")
    with pytest.raises(ValueError):
        parse_calibration_line("calibration [1, 2]")


def test_parse_from_log_takes_last_good_line():
    log = "\n".join(["starting", _line(matmul_flops=1.0), "calibration {broken", _line(), "progress step=1"])
    assert parse_calibration(log).matmul_flops == 700e12
    assert parse_calibration("nothing here") is None
    err = parse_calibration('calibration {"error": "RuntimeError: CUDA error", "seconds": 0.5}')
    assert err is not None and not err.ok and err.error.startswith("RuntimeError")


def test_judge_as_expected():
    j = judge_calibration(parse_calibration_line(_line()), H100)
    assert not j.slow_device and j.flags == []
    assert j.expected_matmul_flops == pytest.approx(989.5e12 * 0.70)
    assert j.matmul_ratio == pytest.approx(700e12 / (989.5e12 * 0.70))
    assert j.mem_bw_ratio == pytest.approx(2.9e12 / (3.35e12 * 0.80))
    assert j.note.startswith("as expected") and j.to_dict()["flags"] == []


def test_judge_slow_device_and_threshold():
    slow = parse_calibration_line(_line(matmul_flops=300e12))  # 0.433 of 692.65e12
    j = judge_calibration(slow, H100)  # default threshold 0.5 (benchmarks.yaml slow_device_fraction)
    assert j.slow_device and j.flags == ["slow_device"] and "matmul 43%" in j.note and j.threshold == 0.5
    assert not judge_calibration(slow, H100, threshold=0.4).slow_device
    assert judge_calibration(parse_calibration_line(_line(matmul_flops=400e12)), H100, threshold=0.7).slow_device
    slow_bw = parse_calibration_line(_line(mem_bw_bytes_s=1.0e12))  # 0.37 of 2.68e12
    j = judge_calibration(slow_bw, H100)
    assert j.slow_device and "copy bandwidth" in j.note


def test_judge_without_expectation():
    cpu = cpu_class_for(host_facts(probe_docker=False))
    c = parse_calibration_line(_line(device="cpu", dtype="fp32", matmul_flops=2e10, mem_bw_bytes_s=8e9))
    j = judge_calibration(c, cpu)
    assert not j.slow_device and j.matmul_ratio is None and "measured only" in j.note
    assert not judge_calibration(None, H100).slow_device
    j = judge_calibration(Calibration("cuda", "bf16", None, None, 1.0, error="boom"), H100)
    assert not j.slow_device and "calibration failed: boom" in j.note


def test_calibrate_script_imports_only_torch_and_stdlib():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names)
    assert mods - stdlib == {"torch"}, mods


def test_calibrate_script_runs_on_cpu():
    cmd = calibration_command(sys.executable, None, "--device", "cpu", "--budget", "0.2", "--matmul-n", "128",
                              "--copy-mib", "4")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("calibration {")
    c = parse_calibration(proc.stdout)
    assert c.ok and c.device == "cpu" and c.dtype == "fp32"
    assert c.matmul_flops > 1e6 and c.mem_bw_bytes_s > 1e6 and c.seconds > 0
    assert c.extra["matmul_n"] == 128 and c.extra["copy_bytes"] == 4 * 2**20


def test_calibrate_script_reports_errors_as_one_line(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("calibrate_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # imports only the stdlib at module level

    def boom(*a, **k):
        raise RuntimeError("CUDA error: no kernel image is available")

    mod.run = boom
    assert mod.main(["--device", "cuda"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    c = parse_calibration(out)
    assert c is not None and not c.ok and c.error == "RuntimeError: CUDA error: no kernel image is available"

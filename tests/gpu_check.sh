#!/usr/bin/env bash
# GPU check: run on a machine with an NVIDIA GPU (never part of the pytest suite).
#
#   bash tests/gpu_check.sh            # from the repository root; <= 10 minutes, no network
#
# Needs only python3 + torch (with CUDA) + nvidia-ml-py. When `import pynvml` fails and wheels
# were carried in .whl/, they are installed into a private directory first (no network).
# Prints, with real NVML: the machine profile, the GPU class, fixed/calibrate.py's line and
# its judgement, and a 20 s telemetry sample taken while the GPU is busy (calibration, then a
# matmul load), with the sampler's own CPU cost. Artifacts go to $GPU_CHECK_OUT (default
# $OUT if set, else /tmp/gpu_check). Exit status 0 only when every step passed.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
ART=${GPU_CHECK_OUT:-${OUT:-/tmp/gpu_check}}
mkdir -p "$ART"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
FAILED=()

step() { echo; echo "=== $* ==="; }
fail() { echo "FAILED: $*"; FAILED+=("$*"); }

step "0. python, torch, nvidia-ml-py"
if ! "$PY" -c "import pynvml" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        SITE=${TMPDIR:-/tmp}/gpu_check_site
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
            && export PYTHONPATH="$PYTHONPATH:$SITE"
    fi
fi
"$PY" - <<'PY' || { fail "python environment"; echo "cannot continue"; exit 1; }
import sys, platform
import torch, pynvml
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "| nvidia-ml-py", getattr(pynvml, "__version__", "?"))
assert torch.cuda.is_available(), "torch sees no CUDA device"
PY
command -v nvidia-smi >/dev/null && nvidia-smi -L

step "1. machine profile and GPU class (real NVML)"
timeout 120 "$PY" - "$ART" <<'PY' || fail "profile/class"
import json, sys
from harness.hw.profile import machine_profile, runnable_gpus
from harness.hw.gpu_class import decide_class, peak_flops_env
mp = machine_profile(probe_docker=True)
print(json.dumps(mp.to_dict(), indent=2, default=str))
assert mp.nvml_available, mp.nvml
gpus = runnable_gpus(mp.gpus)
assert gpus, "NVML sees no runnable GPU"
for g in gpus:
    cls = decide_class(g)
    print(f"class: {g.uuid} {g.name!r} -> {cls.label} (known={cls.known}, HARNESS_PEAK_FLOPS={peak_flops_env(cls)}) "
          f"note: {cls.note}")
    assert cls.label and cls.kind == "gpu"
    assert "·" in cls.label
with open(f"{sys.argv[1]}/profile.json", "w") as fh:
    json.dump(mp.to_dict(), fh, indent=2, default=str)
with open(f"{sys.argv[1]}/gpu_uuid", "w") as fh:
    fh.write(gpus[0].uuid)
PY

step "2. calibration + 20 s telemetry sample (real NVML) under load"
timeout 300 "$PY" - "$ART" <<'PY' || fail "calibration/telemetry"
import json, os, subprocess, sys, time
from pathlib import Path
from harness.hw.calibration import SCRIPT, judge_calibration, parse_calibration
from harness.hw.gpu_class import decide_class
from harness.hw.nvml import open_nvml
from harness.hw.profile import gpu_profile_by_uuid
from harness.hw.telemetry import TelemetrySampler, flags_for, throttle_findings

art = Path(sys.argv[1])
uuid = (art / "gpu_uuid").read_text().strip()
with open_nvml() as s:
    cls = decide_class(gpu_profile_by_uuid(s, uuid))
print("GPU", uuid, "class", cls.label)

sampler = TelemetrySampler(uuid, interval_s=0.25, series_path=art / "telemetry.jsonl")
t_start = time.time()
sampler.start()
env = dict(os.environ, CUDA_VISIBLE_DEVICES=uuid)
proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
print(proc.stdout.strip())
if proc.stderr.strip():
    print(proc.stderr.strip()[-2000:])
cal = parse_calibration(proc.stdout)
assert proc.returncode == 0 and cal is not None and cal.ok, "calibration failed"
assert cal.device == "cuda" and cal.dtype in ("bf16", "fp16"), cal
assert cal.seconds is not None and cal.seconds <= 10, f"calibration took {cal.seconds}s"
judgement = judge_calibration(cal, cls)
print("calibration judgement:", judgement.note, judgement.flags)
(art / "calibration.json").write_text(
    json.dumps({"calibration": cal.to_dict(), "judgement": judgement.to_dict()}, indent=2))

# keep the GPU busy until 20 s have passed, so the clocks and power are those of a loaded GPU
t_load0 = time.time()
load = ("import torch, time, sys\n"
        "end = time.time() + float(sys.argv[1])\n"
        "a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); b = torch.randn_like(a)\n"
        "while time.time() < end:\n"
        "    for _ in range(20): a @ b\n"
        "    torch.cuda.synchronize()\n")
remaining = max(5.0, 20.0 - (time.time() - t_start))
subprocess.run([sys.executable, "-c", load, str(remaining)], env=env, check=True, timeout=120)
t_load1 = time.time()
sampler.stop()
wall = time.time() - t_start

total = sampler.summary()
busy = sampler.summary(t_load0 + 2.0, t_load1)  # the steady part of the load
print("summary (whole sample):", json.dumps(total.to_dict(), indent=2))
print("summary (load window):", json.dumps(busy.to_dict(), indent=2))
print("flags (load window):", flags_for(busy, None), throttle_findings(busy, None))
cpu_frac = sampler.thread_cpu_s / wall
print(f"sampler: {total.sample_count} samples in {wall:.1f}s, thread CPU {sampler.thread_cpu_s:.3f}s "
      f"= {cpu_frac:.3%} of a core, errors {sampler.sample_errors} ({sampler.error})")
(art / "telemetry_summary.json").write_text(json.dumps({"all": total.to_dict(), "load": busy.to_dict(),
                                                       "sampler_cpu_fraction": cpu_frac}, indent=2))
assert wall >= 19.5, wall
assert total.sample_count >= 0.8 * wall / 0.25, f"too few samples: {total.sample_count}"
assert sampler.sample_errors == 0, sampler.error
assert busy.sm_clock_frac_p50 is not None and busy.sm_clock_frac_p50 > 0.3, busy.sm_clock_frac_p50
assert busy.mean_power_w and busy.mean_power_w > 50, busy.mean_power_w
assert busy.energy_j and busy.energy_j > 0, busy.energy_j
assert total.max_temp_c is not None
assert cpu_frac < 0.01, f"sampler costs {cpu_frac:.2%} of a core (budget 1%)"
PY

step "3. prepare tiny, then the baseline for 60 s with real NVML telemetry (local backend: no Docker needed)"
export HARNESS_CACHE_DIR="$ART/cache" HARNESS_RUNS_DIR="$ART/runs" HARNESS_RESULTS="$ART/results"
timeout 240 "$PY" -m harness prepare --benchmark tiny || fail "prepare tiny"
timeout 420 "$PY" -m harness run submissions/baseline/train.py --benchmark tiny --budget 60 --backend local \
    --json > "$ART/baseline_result.json"
rc=$?
[ $rc -eq 0 ] || fail "baseline run (exit $rc)"
"$PY" - "$ART/baseline_result.json" <<'PY' || fail "baseline result"
import json, sys
r = json.load(open(sys.argv[1]))
m, t = r["metrics"], (r.get("telemetry") or {}).get("summary") or {}
steps, tokens_m, secs = m.get("num_steps"), m.get("total_tokens_M"), m.get("training_seconds")
print("status", r["status"], "| val_bpb", m.get("val_bpb"), "| class", r["hardware"]["class"])
print("tokens/s", round(tokens_m * 1e6 / secs) if tokens_m and secs else None, "| MFU %", m.get("mfu_percent"),
      "| steps", steps, "| peak MB", m.get("peak_vram_mb"), "| flags", r.get("flags"))
print("telemetry summary:", json.dumps(t, indent=2))
print("calibration:", json.dumps((r.get("calibration") or {}).get("result"), indent=2))
assert r["status"] == "ok", r.get("reason")
assert r["hardware"]["class"] and r["hardware"]["gpu"], "no GPU in the record"
assert t.get("sample_count", 0) > 0, "no telemetry samples"
assert m.get("mfu_percent") is not None, "MFU unknown: the class's peak FLOP/s did not reach train.py"
PY

step "4. verified scoring on CUDA: export, fixed evaluator, causality probe (1 seed, 30 s, local backend)"
timeout 300 "$PY" -m harness submit submissions/baseline/train.py --benchmark tiny --seeds 1 --budget 30 \
    --backend local --no-calibrate --json > "$ART/verified.json"
"$PY" - "$ART/verified.json" <<'PY' || fail "verified scoring"
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps(d, indent=2))
assert d["scores"], "no verified score (export or evaluator failed on CUDA: see the run's eval/log.txt)"
PY

echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "GPU CHECK PASSED (artifacts in $ART)"
    exit 0
fi
echo "GPU CHECK FAILED: ${FAILED[*]} (artifacts in $ART)"
exit 1

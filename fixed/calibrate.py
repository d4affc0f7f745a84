#!/usr/bin/env python3
"""Fixed calibration micro-benchmark, run inside the run's container before train.py.

Measures, in a few seconds, what this device delivers right now:
  * dense matmul FLOP/s: bf16 on a GPU (fp16 before compute capability 8.0), fp32 on a CPU;
  * memory bandwidth: a large tensor copy (bytes read + bytes written per second).

Prints exactly one line on stdout:

    calibration {"device": "cuda", "dtype": "bf16", "matmul_flops": ..., "mem_bw_bytes_s": ..., "seconds": ...}

and exits 0; on failure the line carries {"error": "..."} and the exit status is 1.
Imports only torch and the standard library (it is not part of the harness package).
The harness parses the line with harness/hw/calibration.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_T0 = time.perf_counter()

FORMAT = 1


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(torch, device, fn, budget_s: float, max_iters: int = 1_000_000) -> tuple[int, float]:
    """Warm up once, then call ``fn`` in growing chunks until ``budget_s`` has passed."""
    fn()
    _sync(torch, device)
    iters, chunk = 0, 1
    t = time.perf_counter()
    while True:
        for _ in range(chunk):
            fn()
        _sync(torch, device)
        iters += chunk
        elapsed = time.perf_counter() - t
        if elapsed >= budget_s or iters >= max_iters:
            return iters, elapsed
        per = elapsed / iters
        chunk = max(1, min(4 * iters, int((budget_s - elapsed) / max(per, 1e-9)) + 1, max_iters - iters))


def run(device_arg: str, budget_s: float, matmul_n: int | None, copy_mib: int | None,
        max_seconds: float = 5.0) -> dict:
    deadline = _T0 + max_seconds
    t_imp = time.perf_counter()
    import torch

    import_s = time.perf_counter() - t_imp
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_arg)
    out: dict = {"format": FORMAT, "device": device.type, "torch": torch.__version__}

    if device.type == "cuda":
        torch.cuda.init()
        props = torch.cuda.get_device_properties(device)
        out["device_name"] = props.name
        out["compute_capability"] = f"{props.major}.{props.minor}"
        out["cuda"] = torch.version.cuda
        free, total = torch.cuda.mem_get_info(device)
        dtype, dtype_name = (torch.bfloat16, "bf16") if props.major >= 8 else (torch.float16, "fp16")
        elt = 2
        n = matmul_n or 8192
        while n > 1024 and 3 * n * n * elt > free * 0.25:  # small MIG slices
            n //= 2
        copy_bytes = (copy_mib or 1024) * 2**20
        copy_bytes = int(min(copy_bytes, free * 0.2))
    else:
        out["device_name"] = _cpu_name()
        out["threads"] = torch.get_num_threads()
        dtype, dtype_name = torch.float32, "fp32"
        n = matmul_n or 1024
        copy_bytes = (copy_mib or 128) * 2**20
    out["dtype"] = dtype_name

    # matmul: C = A @ B, 2 n^3 FLOP each
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    c = torch.empty(n, n, device=device, dtype=dtype)
    left = deadline - time.perf_counter() - 0.5  # keep room for set-up and the copy
    iters, dt = _timed(torch, device, lambda: torch.mm(a, b, out=c), max(0.05, min(budget_s * 0.6, left * 0.6)))
    out["matmul_n"] = n
    out["matmul_iters"] = iters
    out["matmul_flops"] = 2.0 * n**3 * iters / dt
    del a, b, c

    # copy: dst <- src, moves 2 x nbytes per call
    numel = max(1, copy_bytes // 4)
    src = torch.ones(numel, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    left = deadline - time.perf_counter() - 0.2
    iters, dt = _timed(torch, device, lambda: dst.copy_(src), max(0.05, min(budget_s * 0.4, left)))
    out["copy_bytes"] = numel * 4
    out["copy_iters"] = iters
    out["mem_bw_bytes_s"] = 2.0 * numel * 4 * iters / dt
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()

    out["import_s"] = round(import_s, 3)
    out["seconds"] = round(time.perf_counter() - _T0, 3)
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=os.environ.get("HARNESS_CALIBRATE_DEVICE", "auto"),
                    help="auto (cuda if available), cuda, cuda:N or cpu")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds for the timed loops (default 2)")
    ap.add_argument("--max-seconds", type=float, default=5.0,
                    help="the timed loops shrink so the whole script ends by then, when it can (default 5)")
    ap.add_argument("--matmul-n", type=int, default=None, help="matrix size (default 8192 GPU, 1024 CPU)")
    ap.add_argument("--copy-mib", type=int, default=None, help="copy size in MiB (default 1024 GPU, 128 CPU)")
    args = ap.parse_args(argv)
    try:
        res = run(args.device, args.budget, args.matmul_n, args.copy_mib, args.max_seconds)
        rc = 0
    except Exception as exc:  # noqa: BLE001 - one line out, whatever happened
        res = {"format": FORMAT, "error": f"{type(exc).__name__}: {exc}",
               "seconds": round(time.perf_counter() - _T0, 3)}
        rc = 1
    sys.stdout.write("calibration " + json.dumps(res, sort_keys=True) + "\n")
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())

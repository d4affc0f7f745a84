"""The score card: a result, for people."""

from __future__ import annotations

from harness.result import RunResult


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def score_card(r: RunResult) -> str:
    m, p, t = r.metrics, r.provenance, r.timings
    bench = p["benchmark"]
    where = r.backend + ("" if r.isolated else " (unisolated)")
    image = p.get("image") or {}
    lines = [
        f"run {r.run_id} · benchmark {bench['name']} · backend {where}"
        + (f" · image {image.get('tag') or ''} {(image.get('id') or '')[:19]}".rstrip() if image else "")
        + f" · seed {p['seed']} · budget {r.budget_s:g}s",
    ]
    if r.normalization and r.normalization.get("line"):
        lines.append(r.normalization["line"])
    if r.status == "ok":
        line = f"status ok · val_bpb {_fmt(m.get('val_bpb'), '.4f')} · trust {r.trust}"
        if bench.get("entropy_floor_bpb") is not None:
            line += f" · floor {bench['entropy_floor_bpb']:.4f}"
        if bench.get("unigram_bpb") is not None:
            line += f" · unigram {bench['unigram_bpb']:.4f}"
        lines.append(line)
    else:
        lines.append(f"status {r.status} · {r.reason or ''} · trust {r.trust}")
    mfu = m.get("mfu_percent")
    lines.append(
        f"training {_fmt(m.get('training_seconds'), '.1f')}s · total {t.total_s:.1f}s (observed)"
        f" · startup {_fmt(t.startup_s, '.1f')}s · steps {_fmt(m.get('num_steps'), 'd')}"
        f" · tokens {_fmt(m.get('total_tokens_M'), '.2f')}M · params {_fmt(m.get('num_params_M'), '.2f')}M"
        f" · MFU {_fmt(mfu, '.2f', 'unknown')}{'%' if mfu is not None else ''}"
        f" · peak mem {_fmt(m.get('peak_vram_mb'), '.0f')}MB")
    if r.hardware and r.hardware.get("class"):
        lines.append(f"hardware {r.hardware['class']}" + (" · flags " + ", ".join(r.flags) if r.flags else ""))
    if r.traceback_tail and r.status != "ok":
        tail = r.traceback_tail.splitlines()[-8:]
        lines.append("traceback tail:\n  " + "\n  ".join(tail))
    lines.append(f"log {r.log_path}" + (" (capped)" if r.log_truncated else ""))
    return "\n".join(lines)

"""The score card: a result, for people.

Every line goes through harness.sanitize.clean_text, one line each: a failure reason, a traceback tail or
a record someone edited may carry line breaks, escape sequences or bidi controls meant to forge or rewrite
what is shown.
"""

from __future__ import annotations

from harness.record import RunRecord
from harness.sanitize import clean_text


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def score_card(r: RunRecord) -> str:
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
    machine = r.hardware.machine or {}
    place = p.get("placement") or {}
    on = (f" · on {place.get('node')}" + (f" ({place['scheduler']} job {place['job_id']})" if place.get("job_id") else "")
          + (f" · CPUs {place['cpuset']}" if place.get("cpuset") else "")) if place.get("node") else ""
    if machine.get("class"):
        lines.append(f"hardware {machine['class']}{on}" + (" · flags " + ", ".join(r.flags) if r.flags else ""))
    if r.traceback_tail and r.status != "ok":
        lines.append("traceback tail:")
        lines.extend("  " + line for line in clean_text(r.traceback_tail, keep_newlines=True).splitlines()[-8:])
    lines.append(f"log {r.log_path}" + (" (capped)" if r.log_truncated else ""))
    return "\n".join(clean_text(line) for line in lines)  # one line each: no field can forge another line

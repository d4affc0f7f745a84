"""
The verified evaluator: scores an exported model with fixed code, in its own fresh container.

It sees only the exported program (token ids -> logits, weights included), the val data and the
fixed files; the network is off. Before scoring, a causality probe checks that changing the tokens
at positions >= t leaves the logits at positions < t unchanged: a model that peeks ahead is rejected.

    python3 evaluate.py --program DIR/model.pt2 --out OUT/eval.json

The environment gives the benchmark (HARNESS_DATA_DIR, with the val split). Writes one JSON file
and prints it on a line starting with "evaluation ".
"""

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prepare  # noqa: E402  (the fixed module next to this file)

PROBE_DRAWS = 2  # random cut positions per probed batch, each row its own, drawn from the OS
PROBE_EXTRA = 0.125  # besides the first batch, each later scoring batch is probed with this chance
PROBE_TOLERANCE = 1e-3  # max |logit difference| before the cut; float noise is far below this


def load_program(path, device):
    """The exported module, refused when it writes to its inputs or keeps state between calls: a model
    could then rewrite the targets it is scored on, or recognise a probe by remembering the last call."""
    # Functionalize: in-place writes to inputs, buffers or parameters become explicit mutations in the
    # signature (the training IR keeps them as plain copy_ nodes that the signature does not list).
    program = torch.export.load(str(path)).run_decompositions({})
    sig = program.graph_signature
    mutated = [name for kind in ("user_inputs_to_mutate", "buffers_to_mutate", "parameters_to_mutate")
               for name in (getattr(sig, kind, None) or {})]
    if mutated:
        raise InvalidModel(f"the exported model mutates its inputs or buffers ({', '.join(map(str, mutated))[:200]}): "
                           "a scored model must be a pure function of its tokens")
    module = program.module()
    return module.to(device) if hasattr(module, "to") else module


class InvalidModel(ValueError):
    """The exported program breaks a rule of the evaluation (not a crash of the harness)."""


def run_logits(model, x, batch):
    """Logits in float32 for x [B, T]; pads to the exported batch when the batch is fixed."""
    n = x.shape[0]
    if batch and n < batch:
        x = torch.cat([x, x[-1:].expand(batch - n, -1)])
    out = model(x.clone())  # the model never touches the evaluator's own tensors
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out[:n].float()


def causality_probe(model, x, base, batch, vocab, rng):
    """Max change of the logits before each row's cut when the tokens from the cut on are replaced.

    The probe runs on a real scoring batch (same rows and shape as a scoring call, so a model cannot
    tell the two apart), with cut positions drawn per row from the OS's randomness."""
    n, T = x.shape
    worst = {"max_diff": 0.0, "position": None}
    g = torch.Generator().manual_seed(rng.getrandbits(63))  # seeded from the OS: unknowable to the model
    for _ in range(PROBE_DRAWS):
        cuts = torch.randint(1, T, (n,), generator=g).to(x.device)
        future = torch.arange(T, device=x.device)[None, :] >= cuts[:, None]
        noise = torch.randint(0, vocab - len(prepare.SPECIAL_TOKENS), (n, T), generator=g).to(x.device)
        logits = run_logits(model, torch.where(future, noise, x), batch)
        d = torch.where(logits == base, torch.zeros_like(logits), (logits - base).abs())  # equal infinities: 0
        diff = torch.where(~future, d.amax(dim=-1), torch.zeros_like(d[..., 0])).amax(dim=-1)  # before each cut
        row = int(diff.argmax())
        d = diff[row].item()
        if not math.isfinite(d) or d > worst["max_diff"] or worst["position"] is None:
            worst = {"max_diff": d if math.isfinite(d) else float("inf"), "position": int(cuts[row])}
    worst["ok"] = worst["max_diff"] <= PROBE_TOLERANCE
    worst["tolerance"] = PROBE_TOLERANCE
    return worst


@torch.no_grad()
def evaluate(program_path, batch_size=32, device=None):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info_path = Path(program_path).with_name(prepare.EXPORT_INFO)
    try:  # written by the candidate's process: trust nothing in it but a sane fixed batch size
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    except ValueError:
        info = {}
    info = info if isinstance(info, dict) else {}
    fixed_batch = info.get("batch") if info.get("dynamic_batch") is False else None
    if fixed_batch is not None and not (isinstance(fixed_batch, int) and 1 <= fixed_batch <= 4096):
        fixed_batch = 8
    batch = fixed_batch or batch_size
    t0 = time.time()
    model = load_program(program_path, device)
    data_dir, shards = prepare._split_shards("val")
    T = prepare.MAX_SEQ_LEN
    n_rows = prepare.EVAL_TOKENS // T
    stream = prepare._RowStream(data_dir, shards, single_pass=True)
    token_bytes = prepare.get_token_bytes(device)
    result = {"ok": False, "rows": n_rows, "seq_len": T, "eval_tokens": prepare.EVAL_TOKENS,
              "device": str(device), "benchmark": prepare.BENCHMARK}
    rng = random.SystemRandom()  # not reproducible on purpose: a model cannot learn where probes cut
    total_nats, total_bytes, scored, done, probes = 0.0, 0, 0, 0, []
    while done < n_rows:
        rows = torch.from_numpy(stream.next_rows(min(batch, n_rows - done), T)).to(device)
        x, y = rows[:, :-1], rows[:, 1:].clone()
        logits = run_logits(model, x, fixed_batch)
        if logits.shape[:2] != y.shape or logits.shape[-1] < prepare.VOCAB_SIZE:
            result["error"] = f"the model returned logits of shape {tuple(logits.shape)}, expected [B, {T}, >= V]"
            return result
        real = logits[..., :prepare.VOCAB_SIZE]  # -inf is a legitimate mask (e.g. padded vocab); NaN, +inf are not
        if torch.isnan(real).any() or torch.isposinf(real).any():
            result.update(nonfinite=True, error="the model's logits are not finite (NaN or +inf)")
            return result
        if done == 0 or rng.random() < PROBE_EXTRA:
            probe = causality_probe(model, x, logits, fixed_batch, prepare.VOCAB_SIZE, rng)
            probes.append(probe)
            if not probe["ok"]:
                result["causality_probe"] = probe
                result["error"] = (f"non-causal model: changing the tokens from position {probe['position']} on "
                                   f"changed earlier logits by {probe['max_diff']:.3g} (tolerance {PROBE_TOLERANCE:g})")
                return result
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        batch_nats, batch_bytes, batch_scored = prepare.masked_sums(nats, y, token_bytes)
        total_nats += batch_nats.item()
        total_bytes += int(batch_bytes.item())
        scored += int(batch_scored.item())
        done += rows.shape[0]
    result["causality_probe"] = {"ok": True, "batches_probed": len(probes), "tolerance": PROBE_TOLERANCE,
                                 "max_diff": max(p["max_diff"] for p in probes)}
    bpb = total_nats / (math.log(2) * total_bytes)
    result.update({"ok": math.isfinite(bpb), "val_bpb": bpb if math.isfinite(bpb) else None,
                   "total_nats": total_nats, "total_bytes": total_bytes, "scored_tokens": scored,
                   "target_tokens": done * T, "seconds": round(time.time() - t0, 2)})
    if not math.isfinite(bpb):
        result["error"] = "the score is not finite (NaN or inf logits)"
    return result


def _finite(value):
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main():
    parser = argparse.ArgumentParser(description="Score an exported model on the val split with fixed code.")
    parser.add_argument("--program", required=True, help="the exported program (model.pt2)")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    try:
        result = evaluate(args.program, args.batch_size)
    except InvalidModel as e:
        result = {"ok": False, "invalid": True, "error": str(e)[:4000]}
    except Exception as e:  # noqa: BLE001 - the harness reads the error from the file
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:4000]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_finite(result), indent=1))
    os.replace(tmp, out)
    print("evaluation " + json.dumps(_finite(result)), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

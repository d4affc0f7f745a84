"""
The verified scorer: computes val_bpb with fixed code from logits that model servers send it.

It never loads, unpickles or imports anything the candidate produced. The candidate's exported program
runs in two model servers (fixed/model_server.py), each in a process or container of its own, which
connect to this scorer's Unix socket and answer token batches with logits. Every answer is checked
(frame, shape, dtype, finiteness, a time limit per batch) before it is used.

Every scoring batch is probed for causality: each row gets its own cut position, drawn from the OS's
randomness, and a probe copy of the batch whose tokens from the cut on come from another row (so the
future still looks like text). The logits before each cut must not change. The scoring call and its
probe go to different servers, in an order only the scorer knows, so neither server can tell which
of its calls is scored or link a probe to its scoring call, even if it could remember its inputs.

    python3 evaluate.py --socket OUT/model.sock --out OUT/eval.json [--servers 2]

The environment gives the benchmark (HARNESS_DATA_DIR, with the val split). Writes one JSON file
and prints it on a line starting with "evaluation ".
"""

import argparse
import json
import math
import os
import random
import socket
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prepare  # noqa: E402  (the fixed modules next to this file)
import wire  # noqa: E402

PROBE_TOLERANCE = 1e-3  # max |logit difference| before the cut; float noise is far below this
BATCH_TIMEOUT_S = 60.0  # one batch's answer, after the model is loaded
CONNECT_TIMEOUT_S = 240.0  # the servers' start-up: a container start, torch import, loading the program
MAX_PAD_VOCAB = 4096  # logits may carry this many padded vocabulary columns beyond VOCAB_SIZE
DEFAULT_BATCH = 32
WIRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Refused(Exception):
    """The evaluation ends without a score; fields say why (invalid, nonfinite, timed_out, error)."""

    def __init__(self, error, **fields):
        super().__init__(error)
        self.fields = {"error": error, **fields}


class Server:
    """One connected model server, as the scorer sees it: a socket and what it said when it loaded."""

    def __init__(self, sock, name):
        self.sock, self.name = sock, name
        self.hello = {}

    def greet(self, deadline):
        kind, length = wire.recv_header(self.sock, deadline)
        if kind != b"HELO":
            raise wire.WireError(f"expected HELO, got {kind!r}")
        said = wire.recv_json(self.sock, length, deadline)
        if not isinstance(said, dict):
            raise wire.WireError("HELO is not a JSON object")
        # Only the fields the protocol defines, with their types, reach the record: the server is hostile.
        batch = said.get("batch")
        self.hello = {"ok": said.get("ok") is True, "invalid": said.get("invalid") is True,
                      "error": str(said.get("error"))[:4000] if said.get("error") is not None else None,
                      "batch": batch if isinstance(batch, int) and not isinstance(batch, bool) else None,
                      "device": str(said.get("device"))[:64] if said.get("device") is not None else None,
                      "load_s": said.get("load_s") if isinstance(said.get("load_s"), (int, float))
                      and not isinstance(said.get("load_s"), bool) and math.isfinite(said.get("load_s")) else None}
        return self.hello

    def ask(self, x):
        n, T = x.shape
        payload = wire.TOKS_HEAD.pack(n, T) + x.to(torch.int64).contiguous().numpy().tobytes()
        wire.send(self.sock, b"TOKS", payload)

    def answer(self, n, T, vocab, timeout_s):
        """The logits [n, T, V'] as float32, after checking everything the frame claims."""
        deadline = time.monotonic() + timeout_s
        kind, length = wire.recv_header(self.sock, deadline)
        if kind != b"LOGI" or length < wire.LOGI_HEAD.size:
            raise wire.WireError(f"expected logits, got a {kind!r} frame")
        code, rn, rT, V = wire.LOGI_HEAD.unpack(bytes(wire.recv_exact(self.sock, wire.LOGI_HEAD.size, deadline)))
        dtype = wire.DTYPES.get(code)
        if dtype is None:
            raise Refused(f"the model returned logits of an unknown dtype (code {code})", invalid=True)
        if (rn, rT) != (n, T) or not vocab <= V <= vocab + MAX_PAD_VOCAB:
            raise Refused(f"the model returned logits of shape ({rn}, {rT}, {V}), expected ({n}, {T}, V) with "
                          f"{vocab} <= V <= {vocab + MAX_PAD_VOCAB}", invalid=True)
        if length != wire.LOGI_HEAD.size + rn * rT * V * wire.ITEMSIZE[dtype]:
            raise wire.WireError("a logits frame of the wrong length")
        buf = wire.recv_exact(self.sock, length - wire.LOGI_HEAD.size, deadline)
        return torch.frombuffer(buf, dtype=WIRE_DTYPES[dtype]).view(n, T, V).float()

    def close(self):
        try:
            wire.send(self.sock, b"DONE")
        except OSError:
            pass
        self.sock.close()


def accept_servers(listener, count, timeout_s):
    servers = []
    deadline = time.monotonic() + timeout_s
    while len(servers) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(f"only {len(servers)} of {count} model servers connected within {timeout_s:g} s",
                          server_missing=True)
        listener.settimeout(left)
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            continue
        sock.setblocking(True)
        servers.append(Server(sock, "ab"[len(servers)] if len(servers) < 2 else str(len(servers))))
    for s in servers:
        hello = s.greet(deadline)
        if not hello.get("ok"):
            raise Refused(str(hello.get("error") or "the model server could not load the program")[:4000],
                          invalid=hello.get("invalid") is True)
    return servers


def probe_rows(x, rng, previous):
    """(probe batch, cut per row): row r keeps its tokens before cuts[r]; from there on it holds another
    row's tokens (the previous batch's when this batch has one row), so the future reads like text."""
    n, T = x.shape
    g = torch.Generator().manual_seed(rng.getrandbits(63))  # from the OS: unknowable to the model
    cuts = torch.randint(1, T, (n,), generator=g)
    if n > 1:
        donor = torch.roll(x, shifts=int(torch.randint(1, n, (1,), generator=g)), dims=0)
    elif previous is not None:
        donor = previous[:1]
    else:
        donor = torch.randint(0, prepare.VOCAB_SIZE - len(prepare.SPECIAL_TOKENS), (n, T), generator=g)
    future = torch.arange(T)[None, :] >= cuts[:, None]
    return torch.where(future, donor, x), cuts


def check_finite(logits):
    real = logits[..., :prepare.VOCAB_SIZE]  # -inf is a legitimate mask (e.g. padded vocab); NaN, +inf are not
    if torch.isnan(real).any() or torch.isposinf(real).any():
        raise Refused("the model's logits are not finite (NaN or +inf)", nonfinite=True)


def probe_diff(base, probe, cuts):
    """(max |difference| of the logits before each row's cut, the row where it is largest)."""
    T = base.shape[1]
    before = torch.arange(T)[None, :] < cuts[:, None]
    d = torch.where(base == probe, torch.zeros_like(base), (base - probe).abs())  # equal infinities: 0
    d = torch.nan_to_num(d, nan=float("inf")).amax(dim=-1)
    per_row = torch.where(before, d, torch.zeros_like(d)).amax(dim=-1)
    row = int(per_row.argmax())
    return float(per_row[row]), row


@torch.no_grad()
def score(servers, batch_size, batch_timeout_s=BATCH_TIMEOUT_S):
    """The verdict as a dict: val_bpb and the probe's record, or raises Refused."""
    fixed = {s.hello.get("batch") for s in servers} - {None}
    batch = batch_size
    if fixed:
        b = min(fixed)
        batch = b if isinstance(b, int) and 1 <= b <= 4096 else batch_size
    data_dir, shards = prepare._split_shards("val")
    T = prepare.MAX_SEQ_LEN
    n_rows = prepare.EVAL_TOKENS // T
    stream = prepare._RowStream(data_dir, shards, single_pass=True)
    token_bytes = prepare.get_token_bytes("cpu")
    rng = random.SystemRandom()  # not reproducible on purpose: a model cannot learn where probes cut
    total_nats, total_bytes, scored, done = 0.0, 0, 0, 0
    worst, probed_rows, previous = 0.0, 0, None
    t_model = 0.0
    while done < n_rows:
        rows = torch.from_numpy(stream.next_rows(min(batch, n_rows - done), T))
        x, y = rows[:, :-1], rows[:, 1:]
        x_probe, cuts = probe_rows(x, rng, previous)
        scorer_srv, prober = (servers[0], servers[1]) if rng.random() < 0.5 else (servers[1], servers[0])
        calls = [(scorer_srv, x), (prober, x_probe)]
        rng.shuffle(calls)  # which is asked first is unknowable too
        t0 = time.monotonic()
        for srv, tokens in calls:
            srv.ask(tokens)
        answers = {id(srv): srv.answer(x.shape[0], T, prepare.VOCAB_SIZE, batch_timeout_s) for srv, _ in calls}
        t_model += time.monotonic() - t0
        logits, probe_logits = answers[id(scorer_srv)], answers[id(prober)]
        check_finite(logits)
        check_finite(probe_logits)
        diff, row = probe_diff(logits, probe_logits, cuts)
        worst = max(worst, diff)
        probed_rows += x.shape[0]
        if not diff <= PROBE_TOLERANCE:
            raise Refused(f"non-causal model: changing the tokens from position {int(cuts[row])} on (row {done + row}) "
                          f"changed earlier logits by {diff:.3g} (tolerance {PROBE_TOLERANCE:g})", invalid=True,
                          causality_probe={"ok": False, "max_diff": diff if math.isfinite(diff) else None,
                                           "position": int(cuts[row]), "row": done + row,
                                           "tolerance": PROBE_TOLERANCE})
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        batch_nats, batch_bytes, batch_scored = prepare.masked_sums(nats, y, token_bytes)
        total_nats += batch_nats.item()
        total_bytes += int(batch_bytes.item())
        scored += int(batch_scored.item())
        done += x.shape[0]
        previous = x
    bpb = total_nats / (math.log(2) * total_bytes)
    if not math.isfinite(bpb):
        raise Refused("the score is not finite (NaN or inf logits)", nonfinite=True)
    return {"val_bpb": bpb, "total_nats": total_nats, "total_bytes": total_bytes, "scored_tokens": scored,
            "target_tokens": done * T, "batch": batch, "model_seconds": round(t_model, 2),
            "causality_probe": {"ok": True, "rows_probed": probed_rows, "batches_probed": -(-done // batch),
                                "cuts_per_row": 1, "max_diff": worst, "tolerance": PROBE_TOLERANCE}}


def evaluate(socket_path, servers=2, batch_size=DEFAULT_BATCH, connect_timeout_s=CONNECT_TIMEOUT_S,
             batch_timeout_s=BATCH_TIMEOUT_S):
    result = {"ok": False, "rows": prepare.EVAL_TOKENS // prepare.MAX_SEQ_LEN, "seq_len": prepare.MAX_SEQ_LEN,
              "eval_tokens": prepare.EVAL_TOKENS, "benchmark": prepare.BENCHMARK, "servers": servers}
    t0 = time.time()
    if servers != 2:
        raise ValueError("the scorer needs exactly two model servers: a probe and its scoring call never share one")
    listener = wire.listen(socket_path)
    connected = []
    try:
        connected = accept_servers(listener, servers, connect_timeout_s)
        listener.close()
        result["server_hello"] = [s.hello for s in connected]
        result.update(score(connected, batch_size, batch_timeout_s))
        result["ok"] = True
    except Refused as e:
        result.update(e.fields)
    except wire.Timeout as e:
        result.update(error=f"the model did not answer within {batch_timeout_s:g} s per batch ({e})", timed_out=True)
    except (wire.WireError, BrokenPipeError, ConnectionResetError) as e:
        # A server that hangs up while the scorer writes is as lost as one that hangs up while it reads.
        result.update(error=f"the model server broke the protocol or hung up: {e}", server_lost=True)
    finally:
        listener.close()
        for s in connected:
            s.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass
    result["seconds"] = round(time.time() - t0, 2)
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
    parser = argparse.ArgumentParser(description="Score a model served over a socket on the val split with fixed code.")
    parser.add_argument("--socket", required=True, help="the Unix socket the model servers connect to")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--batch-timeout", type=float, default=BATCH_TIMEOUT_S)
    args = parser.parse_args()
    try:
        result = evaluate(args.socket, args.servers, args.batch_size, batch_timeout_s=args.batch_timeout)
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

"""
A model server: runs the candidate's exported program for the verified scorer, in a process (a
container) of its own that sees neither the val split nor anything the scorer reads.

    python3 model_server.py --program DIR/model.pt2 --socket SCORER_DIR/model.sock

Until the program is loaded this is fixed code in a fresh process, so its verdict on the archive can
be trusted: the archive is checked (fixed/archive_check.py) and refused as invalid, naming the entry
or operator, before a byte of it is loaded. Once the program runs, assume it controls this process:
it still reaches the scorer only through the socket, as logits the scorer checks.

The scorer starts two servers and gives each pair (scoring call, probe call) to different servers,
so a server that remembered its inputs still could not link a probe to its scoring call.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import archive_check  # noqa: E402  (fixed modules next to this file)
import wire  # noqa: E402

CONNECT_WAIT_S = 120.0
SEND_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


class InvalidModel(ValueError):
    """The exported program breaks a rule of the evaluation (not a crash)."""


def load_program(path, device, workdir):
    """The checked, sanitized program as a callable module, refused when it writes to its inputs or keeps
    state between calls; and its fixed batch size (None: any batch)."""
    # A folder of its own: two servers on one host (the local backend, a shared /tmp) never share a file.
    own = tempfile.mkdtemp(prefix="model-server-", dir=workdir)
    try:
        try:
            clean = archive_check.sanitize_archive(path, Path(own) / "checked.pt2")
        except archive_check.ArchiveRefused as e:
            raise InvalidModel(f"the exported archive is refused: {e}") from None
        # Functionalize: in-place writes to inputs, buffers or parameters become explicit mutations in the
        # signature (the training IR keeps them as plain copy_ nodes that the signature does not list).
        program = torch.export.load(str(clean)).run_decompositions({})
    finally:
        shutil.rmtree(own, ignore_errors=True)
    sig = program.graph_signature
    mutated = [name for kind in ("user_inputs_to_mutate", "buffers_to_mutate", "parameters_to_mutate")
               for name in (getattr(sig, kind, None) or {})]
    if mutated:
        raise InvalidModel(f"the exported model mutates its inputs or buffers ({', '.join(map(str, mutated))[:200]}): "
                           "a scored model must be a pure function of its tokens")
    batch = None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in set(sig.user_inputs)]
    if inputs:
        val = inputs[0].meta.get("val")
        if val is not None and isinstance(val.shape[0], int):
            batch = int(val.shape[0])
    module = program.module()
    return (module.to(device) if hasattr(module, "to") else module), batch


@torch.no_grad()
def logits_for(model, x, batch):
    """The model's logits for x [n, T]; padded to the exported batch when that is fixed."""
    n = x.shape[0]
    if batch and n < batch:
        x = torch.cat([x, x[-1:].expand(batch - n, -1)])
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not a tensor")
    out = out[:n]
    if out.dtype not in SEND_DTYPES:
        out = out.float()
    return out.contiguous()


def serve(sock, model, batch, device):
    while True:
        kind, length = wire.recv_header(sock)
        if kind == b"DONE":
            return 0
        if kind != b"TOKS" or length < wire.TOKS_HEAD.size:
            raise wire.WireError(f"unexpected frame {kind!r}")
        n, T = wire.TOKS_HEAD.unpack(bytes(wire.recv_exact(sock, wire.TOKS_HEAD.size)))
        if length != wire.TOKS_HEAD.size + 8 * n * T:
            raise wire.WireError("a token frame of the wrong length")
        tokens = torch.frombuffer(wire.recv_exact(sock, 8 * n * T), dtype=torch.int64).view(n, T).to(device)
        out = logits_for(model, tokens, batch)
        if out.dim() != 3:
            raise ValueError(f"the model returned logits of shape {tuple(out.shape)}, expected [B, T, V]")
        head = wire.LOGI_HEAD.pack(SEND_DTYPES[out.dtype], *out.shape)
        data = out.cpu().view(torch.uint8).numpy()
        sock.sendall(wire.HEADER.pack(b"LOGI", len(head) + data.nbytes) + head)
        sock.sendall(memoryview(data).cast("B"))


def main():
    parser = argparse.ArgumentParser(description="Serve an exported model's logits to the verified scorer.")
    parser.add_argument("--program", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--role", default="a")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sock = wire.connect(args.socket, CONNECT_WAIT_S)
    t0 = time.time()
    workdir = os.environ.get("TMPDIR", "/tmp")
    try:
        model, batch = load_program(args.program, device, workdir)
    except InvalidModel as e:
        wire.send_json(sock, b"HELO", {"ok": False, "invalid": True, "error": str(e)[:4000]})
        print(f"model server {args.role}: refused: {e}", flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - reported to the scorer, which decides
        wire.send_json(sock, b"HELO", {"ok": False, "invalid": False, "error": f"{type(e).__name__}: {e}"[:4000]})
        traceback.print_exc()
        return 1
    wire.send_json(sock, b"HELO", {"ok": True, "batch": batch, "device": str(device),
                                   "load_s": round(time.time() - t0, 2)})
    print(f"model server {args.role}: loaded in {time.time() - t0:.1f}s (batch {batch or 'dynamic'})", flush=True)
    try:
        return serve(sock, model, batch, device)
    except wire.WireError as e:
        print(f"model server {args.role}: {e}", flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - the scorer sees the hang-up; the log says why
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())

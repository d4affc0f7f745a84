"""
The wire between the verified scorer (fixed/evaluate.py) and a model server (fixed/model_server.py):
length-prefixed frames over a Unix socket. The scorer sends token batches, the server answers with
logits. The scorer treats every byte from the server as hostile: a frame's kind, length, shape and
dtype are checked against what was asked before anything is read into memory.

    frame   = kind (4 bytes ASCII) + length (u64 little-endian) + payload
    HELO    server -> scorer   JSON {"ok": bool, "invalid": bool, "error": str, "batch": int|null}
    TOKS    scorer -> server   u32 n, u32 T, then n*T int64 token ids
    LOGI    server -> scorer   u8 dtype, u32 n, u32 T, u32 V, then n*T*V values
    DONE    scorer -> server   (empty)
"""

import json
import os
import socket
import struct
import time

HEADER = struct.Struct("<4sQ")
TOKS_HEAD = struct.Struct("<II")
LOGI_HEAD = struct.Struct("<BIII")
MAX_JSON = 64 * 1024
DTYPES = {0: "float32", 1: "bfloat16", 2: "float16"}  # what a server may answer with
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


class WireError(RuntimeError):
    """The peer broke the protocol, went silent past its deadline, or hung up."""


class Timeout(WireError):
    """No complete answer before the deadline."""


def send(sock, kind, payload=b""):
    sock.sendall(HEADER.pack(kind, len(payload)))
    if payload:
        sock.sendall(payload)


def send_json(sock, kind, doc):
    send(sock, kind, json.dumps(doc).encode()[:MAX_JSON])


def recv_exact(sock, n, deadline=None, into=None):
    """n bytes (into a fresh or the given bytearray); Timeout past the deadline, WireError on hang-up."""
    buf = into if into is not None else bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no answer within the time limit ({got} of {n} bytes)")
            sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:n])
        except socket.timeout:
            raise Timeout(f"no answer within the time limit ({got} of {n} bytes)") from None
        except OSError as e:
            raise WireError(f"connection lost ({e})") from None
        if k == 0:
            raise WireError(f"the peer hung up ({got} of {n} bytes)")
        got += k
    return buf


def recv_header(sock, deadline=None):
    kind, length = HEADER.unpack(bytes(recv_exact(sock, HEADER.size, deadline)))
    return kind, length


def recv_json(sock, length, deadline=None):
    if length > MAX_JSON:
        raise WireError(f"a message of {length} bytes is too large")
    try:
        doc = json.loads(bytes(recv_exact(sock, length, deadline)))
    except ValueError:
        raise WireError("a message is not JSON") from None
    if not isinstance(doc, dict):
        raise WireError("a message is not a JSON object")
    return doc


def connect(path, wait_s):
    """Connect to the Unix socket at path, waiting up to wait_s for it to appear. The path may be longer
    than the 108 bytes a socket address holds: the connection is made from the socket's folder."""
    folder, name = os.path.split(os.path.abspath(path))
    deadline = time.monotonic() + wait_s
    cwd = os.getcwd()
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(folder)
            sock.connect(name)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise WireError(f"no scorer listening at {path} after {wait_s:g} s") from None
            time.sleep(0.05)
        finally:
            os.chdir(cwd)


def listen(path, backlog=4):
    folder, name = os.path.split(os.path.abspath(path))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(name)
        os.chmod(name, 0o666)  # a server in another container (same uid by default) connects to it
    finally:
        os.chdir(cwd)
    sock.listen(backlog)
    return sock

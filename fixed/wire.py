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


MAX_ADDRESS = 107  # bytes of a Unix socket path (sun_path holds 108 with the NUL)


class _Address:
    """A socket address for path, without os.chdir (the harness binds from several threads at once):
    the path itself when it fits, else the same file reached through /proc/self/fd/N of its folder."""

    def __init__(self, path):
        self.path, self.fd = os.path.abspath(path), None
        if len(os.fsencode(self.path)) > MAX_ADDRESS:
            folder, name = os.path.split(self.path)
            self.fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
            self.path = "/proc/self/fd/%d/%s" % (self.fd, name)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def connect(path, wait_s):
    """Connect to the Unix socket at path, waiting up to wait_s for it to appear. The path may be longer
    than the 108 bytes a socket address holds."""
    deadline = time.monotonic() + wait_s
    with _Address(path) as address:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address)
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise WireError(f"no scorer listening at {path} after {wait_s:g} s") from None
                time.sleep(0.05)


def listen(path, backlog=4):
    with _Address(path) as address:
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address)
        os.chmod(address, 0o666)  # a server in another container (same uid by default) connects to it
    sock.listen(backlog)
    return sock

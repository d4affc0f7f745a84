"""
The fixed part of the benchmark: data, tokenizer, dataloader and evaluation.

This file is mounted read-only into every run. Candidates import it (`from prepare import ...`) and
must not change it. It imports no harness code: the harness tells it which benchmark is active
through the environment (HARNESS_DATA_DIR, HARNESS_TIME_BUDGET, HARNESS_SEED, HARNESS_PEAK_FLOPS,
HARNESS_MODEL_HINT), see docs/design.md.

Two halves:
  1. Building a benchmark's data cache (called by `harness prepare`): generate or fetch the text,
     train a BPE tokenizer (rustbpe) and load it as a tiktoken Encoding, pre-tokenize train and val
     into binary shards with document boundaries, write a manifest with the sha256 of every file.
  2. The runtime API train.py uses, a superset of autoresearch's prepare.py:
     MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE, Tokenizer, get_token_bytes,
     make_dataloader, evaluate_bpb (plus SEED, PEAK_FLOPS, MODEL_HINT).
"""

import base64
import bisect
import hashlib
import json
import math
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Constants shared by both halves
# ---------------------------------------------------------------------------

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# GPT-4 style split, but numbers in groups of at most 2 digits (as autoresearch).
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS_TOKEN = SPECIAL_TOKENS[0]
TOKEN_DTYPE = np.uint16  # every vocab here fits in 16 bits; the schema caps vocab_size at 65536
SHARD_TOKENS = 1 << 26  # 64 M tokens (128 MB) per shard file

# autoresearch's constants: the defaults when no benchmark is active.
_DEFAULTS = {"seq_len": 2048, "eval_tokens": 40 * 524288, "vocab_size": 8192, "time_budget": 300.0}


def _sha256(path, chunk=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_sha256(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Half 1: building a data cache
# ---------------------------------------------------------------------------

class CacheError(RuntimeError):
    """The data cache is missing, corrupt or cannot be built."""


def _noop(*_args, **_kwargs):
    pass


# --- the synthetic `markov` source (benchmark `tiny`) ----------------------
# An order-2 Markov chain over a small ASCII alphabet. Its transition table comes from the seed,
# so its entropy rate h is known exactly: no model can do better than h bits per byte on text it
# has not seen, and a score below h proves that the val text leaked into training.

def markov_chain(data_cfg):
    """(alphabet, P, pi): P[s, c] = P(next char c | state s), s = prev2 * V + prev1; pi = stationary law of s."""
    alphabet = data_cfg["alphabet"]
    V = len(alphabet)
    rng = np.random.default_rng(data_cfg["seed"])
    S = V * V
    P = np.zeros((S, V))
    for s in range(S):
        succ = np.argsort(rng.random(V))[: data_cfg["successors"]]
        w = -np.log(rng.random(len(succ)))  # exponential weights = a Dirichlet(1) draw
        P[s, succ] = w / w.sum()
    eps = data_cfg["smoothing"]
    P = (1.0 - eps) * P + eps / V  # every transition possible: the chain is irreducible and aperiodic
    pi = np.full(S, 1.0 / S)
    P3 = P.reshape(V, V, V)  # [a, b, c]
    for _ in range(10_000):  # power iteration: state (a, b) -> (b, c)
        new = np.einsum("ab,abc->bc", pi.reshape(V, V), P3).reshape(S)
        done = np.abs(new - pi).sum() < 1e-15
        pi = new
        if done:
            break
    return alphabet, P, pi / pi.sum()


def markov_entropy_rate(P, pi):
    """Bits per character (= per byte: the alphabet is ASCII) of the stationary chain."""
    with np.errstate(divide="ignore", invalid="ignore"):
        H = -np.where(P > 0, P * np.log2(P), 0.0).sum(axis=1)
    return float((pi * H).sum())


def generate_markov_docs(data_cfg, total_bytes, seed):
    """Documents of the chain, each started from the stationary law, until total_bytes are produced."""
    alphabet, P, pi = markov_chain(data_cfg)
    V = len(alphabet)
    lo, hi = data_cfg["doc_bytes"]
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(P, axis=1)
    cdf[:, -1] = 1.0
    pi_cdf = np.cumsum(pi)
    pi_cdf[-1] = 1.0
    chars = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    docs, produced = [], 0
    while produced < total_bytes:
        n = max(1, min(4096, int((total_bytes - produced) / ((lo + hi) / 2)) + 1))
        lengths = lo + np.floor(rng.random(n) * (hi - lo + 1)).astype(np.int64)
        L = int(lengths.max())
        out = np.empty((n, L), dtype=np.int64)
        state = np.searchsorted(pi_cdf, rng.random(n), side="right").clip(0, V * V - 1)
        out[:, 0], out[:, 1] = state // V, state % V
        for t in range(2, L):
            nxt = (rng.random(n)[:, None] >= cdf[state]).sum(axis=1).clip(0, V - 1)
            out[:, t] = nxt
            state = (state % V) * V + nxt
        text = chars[out]
        for i in range(n):
            docs.append(text[i, : lengths[i]].tobytes().decode("ascii"))
        produced += int(lengths.sum())
    return docs


# --- the `hf_parquet` source (benchmark `climbmix`) -------------------------

def _shard_name(i):
    return f"shard_{i:05d}.parquet"


def fetch_parquet_shards(data_cfg, download_dir, source_dir=None, log=_noop):
    """Local paths of the train shards and the val shard.

    From source_dir when given (tests, mirrors), else downloaded with the Hugging Face hub client,
    which caches and resumes partial downloads.
    """
    names = [_shard_name(i) for i in range(data_cfg["train_shards"])]
    val_name = _shard_name(data_cfg["val_shard"])
    paths = {}
    for name in names + [val_name]:
        if source_dir is not None:
            p = Path(source_dir) / name
            if not p.is_file():
                raise CacheError(f"{p}: missing parquet shard (source_dir given, nothing is downloaded)")
        else:
            from huggingface_hub import hf_hub_download  # build-time dependency, imported lazily

            log(f"fetching {data_cfg['repo']}/{name}")
            p = Path(hf_hub_download(repo_id=data_cfg["repo"], repo_type="dataset", filename=name,
                                     local_dir=str(download_dir)))
        paths[name] = p
    return [paths[n] for n in names], paths[val_name]


def iter_parquet_texts(paths, cap_chars=None):
    """Texts of the `text` column, through `datasets` (the same code for the hub and for local files)."""
    from datasets import load_dataset  # build-time dependency, imported lazily

    ds = load_dataset("parquet", data_files={"data": [str(p) for p in paths]}, split="data", streaming=True)
    for row in ds:
        text = row["text"]
        if text:
            yield text[:cap_chars] if cap_chars else text


# --- tokenizer ---------------------------------------------------------------

def train_tokenizer(texts, vocab_size, log=_noop):
    """Train BPE with rustbpe; return mergeable ranks {token bytes: rank} (specials come on top)."""
    import rustbpe  # build-time dependency, imported lazily

    tok = rustbpe.Tokenizer()
    t0 = time.time()
    tok.train_from_iterator(iter(texts), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(b): int(r) for b, r in tok.get_mergeable_ranks()}
    log(f"tokenizer: {len(ranks)} tokens + {len(SPECIAL_TOKENS)} specials in {time.time() - t0:.1f}s")
    return ranks


def save_tokenizer(ranks, tokenizer_dir, name):
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    with open(tokenizer_dir / "ranks.tiktoken", "w") as f:  # tiktoken's own file format
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    n = len(ranks)
    meta = {"name": name, "pattern": SPLIT_PATTERN,
            "special_tokens": {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}, "bos": BOS_TOKEN}
    (tokenizer_dir / "tokenizer.json").write_text(json.dumps(meta, indent=1))


def load_encoding(tokenizer_dir):
    import tiktoken

    tokenizer_dir = Path(tokenizer_dir)
    meta = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    ranks = {}
    for line in (tokenizer_dir / "ranks.tiktoken").read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    enc = tiktoken.Encoding(name=meta["name"], pat_str=meta["pattern"], mergeable_ranks=ranks,
                            special_tokens=meta["special_tokens"])
    return enc, ranks, meta


def token_byte_lengths(ranks, vocab_size):
    """Byte length of each token from its raw bytes, never through a UTF-8 decode (autoresearch #384:
    a token that is not valid UTF-8 alone decodes to U+FFFD and would count 3 bytes). Specials: 0."""
    out = np.zeros(vocab_size, dtype=np.int32)
    for token, rank in ranks.items():
        out[rank] = len(token)
    return out


# --- pre-tokenized shards ----------------------------------------------------

def _write_split(enc, bos, texts, split_dir, log=_noop, progress=_noop):
    """Tokenize documents (each prefixed by BOS) into shards: NNNNN.bin (uint16 tokens) and
    NNNNN.idx (int64 offsets of each document's BOS). Returns shard descriptions."""
    split_dir.mkdir(parents=True, exist_ok=True)
    shards, buf, starts, n_buf = [], [], [], 0
    total_tokens = 0

    def flush():
        nonlocal buf, starts, n_buf
        if not n_buf:
            return
        i = len(shards)
        arr = np.concatenate(buf).astype(TOKEN_DTYPE)
        arr.tofile(split_dir / f"{i:05d}.bin")
        np.asarray(starts, dtype=np.int64).tofile(split_dir / f"{i:05d}.idx")
        shards.append({"tokens": f"{split_dir.name}/{i:05d}.bin", "docs": f"{split_dir.name}/{i:05d}.idx",
                       "n_tokens": int(arr.size), "n_docs": len(starts)})
        buf, starts, n_buf = [], [], 0

    batch = []

    def encode_batch():
        nonlocal n_buf, total_tokens
        for ids in enc.encode_ordinary_batch(batch, num_threads=8):
            if n_buf + len(ids) + 1 > SHARD_TOKENS:
                flush()
            starts.append(n_buf)
            buf.append(np.asarray([bos] + ids, dtype=np.int64))
            n_buf += len(ids) + 1
            total_tokens += len(ids) + 1
        progress(len(batch))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= 1024:
            encode_batch()
    if batch:
        encode_batch()
    flush()
    log(f"{split_dir.name}: {total_tokens:,} tokens in {len(shards)} shard(s)")
    return shards


def _unigram_bpb(train_shards, val_rows, data_dir, vocab_size, token_bytes):
    """BPB of a unigram model fitted on train, on the scored val targets: a bar any model should clear."""
    counts = np.ones(vocab_size, dtype=np.float64)  # add-one smoothing
    for s in train_shards:
        counts += np.bincount(np.fromfile(data_dir / s["tokens"], dtype=TOKEN_DTYPE), minlength=vocab_size)
    nbytes = token_bytes.astype(np.float64)
    counts[nbytes == 0] = 0.0  # specials are never scored; give them no mass
    logp = np.log(counts / counts.sum(), where=counts > 0, out=np.full(vocab_size, -np.inf))
    targets = val_rows[:, 1:].reshape(-1)
    scored = nbytes[targets] > 0
    return float(-logp[targets[scored]].sum() / (math.log(2) * nbytes[targets[scored]].sum()))


def build_cache(config, data_dir, source_dir=None, download_dir=None, log=_noop, progress=_noop):
    """Build the data cache for one benchmark into data_dir, or verify and reuse it.

    config: the benchmark's data config (harness Benchmark.data_config()). Returns the manifest.
    A corrupt or partial cache is detected, reported through log() and rebuilt.
    The build goes to a sibling folder that replaces data_dir only when complete.
    """
    data_dir = Path(data_dir)
    problem = verify_cache(data_dir, config)
    if problem is None:
        log(f"{config['name']}: cache verified at {data_dir}")
        return json.loads((data_dir / MANIFEST).read_text())
    if (data_dir / MANIFEST).exists() or data_dir.exists():
        log(f"{config['name']}: {problem}; rebuilding")
    partial = data_dir.with_name(data_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t0 = time.time()
    data = config["data"]
    sources = {}
    stats = {}
    if data["source"] == "markov":
        progress("generate", 0, 2)
        train_docs = generate_markov_docs(data, data["train_bytes"], seed=data["seed"] + 1)
        progress("generate", 1, 2)
        # The val text comes from a seed drawn from the OS now and kept nowhere: a candidate that knows
        # benchmarks.yaml can rebuild the chain (and the train text), never the val text. Same chain, so
        # the same floor; two preparations (two labs) get different val texts, hence different manifests.
        val_docs = generate_markov_docs(data, data["val_bytes"], seed=secrets.randbits(63))
        progress("generate", 2, 2)
        _, P, pi = markov_chain(data)
        stats["entropy_floor_bpb"] = markov_entropy_rate(P, pi)
        tok_texts, train_texts, val_texts = (lambda: iter(train_docs)), (lambda: iter(train_docs)), (lambda: iter(val_docs))
        n_train_docs, n_val_docs = len(train_docs), len(val_docs)
    elif data["source"] == "hf_parquet":
        download_dir = Path(download_dir or data_dir.parent / "_downloads" / config["name"])
        train_paths, val_path = fetch_parquet_shards(data, download_dir, source_dir, log)
        for p in train_paths + [val_path]:
            sources[p.name] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
        cap = data.get("doc_chars_cap")
        budget = data.get("tokenizer_chars")

        def tok_texts():
            used = 0
            for t in iter_parquet_texts(train_paths, cap):
                if budget and used >= budget:
                    return
                used += len(t)
                yield t

        train_texts = lambda: iter_parquet_texts(train_paths)  # noqa: E731
        val_texts = lambda: iter_parquet_texts([val_path])  # noqa: E731
        n_train_docs = n_val_docs = None
    else:
        raise CacheError(f"unknown data source {data['source']!r}")

    progress("tokenizer", 0, 1)
    ranks = train_tokenizer(tok_texts(), config["vocab_size"], log)
    save_tokenizer(ranks, partial / "tokenizer", f"harness-{config['name']}")
    enc, ranks, meta = load_encoding(partial / "tokenizer")
    bos = meta["special_tokens"][BOS_TOKEN]
    progress("tokenizer", 1, 1)

    counter = {"n": 0}

    def tick(n, total=n_train_docs, stage="tokenize train"):
        counter["n"] += n
        progress(stage, counter["n"], total)

    train_shards = _write_split(enc, bos, train_texts(), partial / "train", log, tick)
    counter["n"] = 0
    val_shards = _write_split(enc, bos, val_texts(), partial / "val", log,
                              lambda n: tick(n, n_val_docs, "tokenize val"))

    token_bytes = token_byte_lengths(ranks, config["vocab_size"])
    rows_needed = config["eval_tokens"] // config["seq_len"]
    val_stream = _RowStream(partial, val_shards, single_pass=True)
    val_rows = val_stream.take(rows_needed, config["seq_len"])
    if val_rows is None:
        shutil.rmtree(partial, ignore_errors=True)
        raise CacheError(
            f"{config['name']}: the val split holds fewer than {rows_needed} rows of {config['seq_len'] + 1} tokens "
            f"(eval_tokens {config['eval_tokens']}): give it more text or lower eval_tokens in benchmarks.yaml")
    stats["unigram_bpb"] = _unigram_bpb(train_shards, val_rows, partial, config["vocab_size"], token_bytes)
    stats["train_tokens"] = sum(s["n_tokens"] for s in train_shards)
    stats["val_tokens"] = sum(s["n_tokens"] for s in val_shards)
    stats["eval_bytes"] = int(token_bytes[val_rows[:, 1:]].sum())

    files = {}
    for p in sorted(partial.rglob("*")):
        if p.is_file():
            files[p.relative_to(partial).as_posix()] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
    manifest = {
        "format": FORMAT_VERSION,
        "benchmark": config["name"],
        "config": config,
        "config_sha256": config_sha256(config),
        "tokenizer": {"vocab_size": config["vocab_size"], "bos_id": bos, "name": meta["name"],
                      "sha256": hashlib.sha256("".join(files[k]["sha256"] for k in sorted(files)
                                                       if k.startswith("tokenizer/")).encode()).hexdigest()},
        "splits": {"train": train_shards, "val": val_shards},
        "files": files,
        "sources": sources,
        "stats": stats,
    }
    # When and how fast it was built goes beside the manifest, not in it: the same data gives the same
    # manifest, byte for byte, on every machine, so labs can compare manifest hashes.
    build = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "build_seconds": round(time.time() - t0, 2), "torch": torch.__version__, "numpy": np.__version__}
    (partial / "build.json").write_text(json.dumps(build, indent=1))
    tmp = partial / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, partial / MANIFEST)  # the manifest is written last: its presence means complete
    old = data_dir.with_name(data_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if data_dir.exists():
        data_dir.rename(old)
    partial.rename(data_dir)
    shutil.rmtree(old, ignore_errors=True)
    log(f"{config['name']}: cache built at {data_dir} in {build['build_seconds']}s")
    return manifest


def verify_cache(data_dir, config=None, splits=("train", "val")):
    """None when the cache is complete and intact (and matches config when given), else what is wrong."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        return f"no cache at {data_dir}" if not data_dir.exists() else f"{path} missing (partial build?)"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"{path} is unreadable ({e})"
    if manifest.get("format") != FORMAT_VERSION:
        return f"{path} has format {manifest.get('format')}, expected {FORMAT_VERSION}"
    if config is not None and manifest.get("config_sha256") != config_sha256(config):
        return "the benchmark's configuration changed since the cache was built"
    for rel, info in manifest["files"].items():
        if rel.split("/")[0] in ("train", "val") and rel.split("/")[0] not in splits:
            continue
        f = data_dir / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != info["bytes"]:
            return f"{rel} is truncated or corrupt (size {f.stat().st_size}, expected {info['bytes']})"
        if _sha256(f) != info["sha256"]:
            return f"{rel} is corrupt (sha256 mismatch)"
    return None


# ---------------------------------------------------------------------------
# Half 2: the runtime API
# ---------------------------------------------------------------------------

def _env_float(name):
    value = os.environ.get(name, "").strip()
    if not value or value.lower() in ("unknown", "none"):
        return None
    return float(value)


DATA_DIR = os.environ.get("HARNESS_DATA_DIR", "")
BENCHMARK = os.environ.get("HARNESS_BENCHMARK", "")
_MANIFEST = None
if DATA_DIR and (Path(DATA_DIR) / MANIFEST).is_file():
    _MANIFEST = json.loads((Path(DATA_DIR) / MANIFEST).read_text())
    BENCHMARK = BENCHMARK or _MANIFEST["benchmark"]
_CFG = _MANIFEST["config"] if _MANIFEST else _DEFAULTS

MAX_SEQ_LEN = int(_CFG["seq_len"])
EVAL_TOKENS = int(_CFG["eval_tokens"])
VOCAB_SIZE = int(_CFG["vocab_size"])
TIME_BUDGET = _env_float("HARNESS_TIME_BUDGET") or _DEFAULTS["time_budget"]
SEED = int(os.environ.get("HARNESS_SEED", "0"))
PEAK_FLOPS = _env_float("HARNESS_PEAK_FLOPS")  # None: unknown, so MFU cannot be computed honestly
MODEL_HINT = json.loads(os.environ.get("HARNESS_MODEL_HINT", "{}") or "{}")
# "export" in verified mode: the val split is not mounted, and evaluate_bpb hands the model to the
# harness's own evaluator instead of scoring it here (see export_model).
EVAL_MODE = os.environ.get("HARNESS_EVAL_MODE", "inprocess")
OUT_DIR = os.environ.get("HARNESS_OUT_DIR", "")
FEED = os.environ.get("HARNESS_FEED", "")  # the harness's train-data socket; empty: read the shards here
EXPORT_FILE = "model.pt2"
EXPORT_INFO = "export.json"
EXPORT_BATCH = 8  # example batch for torch.export; the batch dimension is exported as dynamic when it can be


def _require_cache():
    if _MANIFEST is None:
        raise RuntimeError("no benchmark data: HARNESS_DATA_DIR is not set or holds no manifest.json; "
                           "run train.py through the harness (harness run train.py)")
    return Path(DATA_DIR), _MANIFEST


class Tokenizer:
    """BPE tokenizer of the active benchmark (a tiktoken Encoding)."""

    def __init__(self, enc, ranks):
        self.enc = enc
        self._ranks = ranks
        self.bos_token_id = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, tokenizer_dir=None):
        if tokenizer_dir is None:
            tokenizer_dir = _require_cache()[0] / "tokenizer"
        enc, ranks, _ = load_encoding(tokenizer_dir)
        return cls(enc, ranks)

    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_bos_token_id(self):
        return self.bos_token_id

    def _prepend_id(self, prepend):
        return prepend if prepend is None or isinstance(prepend, int) else self.enc.encode_single_token(prepend)

    def encode(self, text, prepend=None, num_threads=8):
        pre = self._prepend_id(prepend)
        if isinstance(text, str):
            ids = self.enc.encode_ordinary(text)
            return ids if pre is None else [pre] + ids
        if isinstance(text, list):
            out = self.enc.encode_ordinary_batch(text, num_threads=num_threads)
            return out if pre is None else [[pre] + ids for ids in out]
        raise ValueError(f"encode() takes a str or a list of str, not {type(text).__name__}")

    def decode(self, ids):
        return self.enc.decode(ids)

    def token_bytes(self, token_id):
        """Raw bytes of one (non-special) token."""
        return self.enc.decode_single_token_bytes(token_id)


def get_token_bytes(device="cpu"):
    """int32 tensor [VOCAB_SIZE]: each token's length in bytes from its raw bytes; 0 for specials."""
    data_dir, _ = _require_cache()
    _, ranks, _ = load_encoding(data_dir / "tokenizer")
    return torch.from_numpy(token_byte_lengths(ranks, VOCAB_SIZE)).to(device)


class _RowStream:
    """Rows of T+1 tokens packed from a split's documents, best-fit like autoresearch's loader.

    Every row starts with a document's BOS. Documents are read in their stored order into a buffer
    kept sorted by length; each row takes the longest buffered document that still fits, again and
    again; when none fits, the shortest is cropped to fill the row exactly (its rest is dropped).
    No padding. The layout depends only on the data, T and buffer_size, never on the batch size.
    """

    def __init__(self, data_dir, shards, buffer_size=1000, single_pass=False):
        if not shards:
            raise RuntimeError("this split has no shards")
        # plain ndarray views of the memmaps: slicing a memmap subclass costs microseconds per call
        self.tokens = [np.memmap(Path(data_dir) / s["tokens"], dtype=TOKEN_DTYPE, mode="r").view(np.ndarray)
                       for s in shards]
        starts = [np.fromfile(Path(data_dir) / s["docs"], dtype=np.int64) for s in shards]
        # Python ints: the packing loop below touches one document at a time, and numpy scalars are slow there.
        self.starts = [st.tolist() for st in starts]
        self.lengths = [np.diff(st, append=len(tok)).tolist() for st, tok in zip(starts, self.tokens)]
        self.n_docs = sum(len(st) for st in self.starts)
        self.buffer_size = max(1, min(buffer_size, self.n_docs))  # more than one pass would only repeat
        self.shard, self.doc, self.read, self.epoch = 0, 0, 0, 1
        self.lens, self.items = [], []  # sorted lengths, and (length, order, shard, start) beside them
        self.single_pass = single_pass  # evaluation: one pass over the documents, never a repeat

    def _refill(self):
        lens, items = self.lens, self.items
        while len(items) < self.buffer_size:
            if self.single_pass and self.read >= self.n_docs:
                return
            while self.doc >= len(self.starts[self.shard]):
                self.shard, self.doc = self.shard + 1, 0
                if self.shard == len(self.tokens):
                    self.shard = 0
                    self.epoch += 1
            L = self.lengths[self.shard][self.doc]
            i = bisect.bisect_right(lens, L)
            lens.insert(i, L)
            items.insert(i, (L, self.read, self.shard, self.starts[self.shard][self.doc]))
            self.doc += 1
            self.read += 1

    def next_rows(self, B, T):
        rows = np.empty((B, T + 1), dtype=np.int64)
        lens, items, tokens = self.lens, self.items, self.tokens
        for r in range(B):
            pos = 0
            while pos <= T:
                if len(items) < self.buffer_size:
                    self._refill()
                    if not items:
                        raise EOFError("the split has no more documents")
                room = T + 1 - pos
                i = bisect.bisect_right(lens, room) - 1  # the longest document that fits
                if i < 0:
                    i = 0  # none fits: crop the shortest
                lens.pop(i)
                L, _, shard, start = items.pop(i)
                n = L if L < room else room
                rows[r, pos:pos + n] = tokens[shard][start:start + n]
                pos += n
        return rows

    def take(self, n, T):
        """The first n rows as one array, or None when the split is too short to give them in one pass."""
        try:
            return self.next_rows(n, T)
        except EOFError:
            return None


def _split_shards(split):
    data_dir, manifest = _require_cache()
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    shards = manifest["splits"][split]
    if shards and not (data_dir / shards[0]["tokens"]).exists():
        raise RuntimeError(f"the {split} split is not available in this run")
    return data_dir, shards


def _to_device(rows, device, pinned):
    t = torch.from_numpy(rows)
    if device.type == "cuda":
        t = t.pin_memory() if pinned else t
        t = t.to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


class _FeedStream:
    """The train rows from the harness's feed (harness/feed.py) over a Unix socket: in a harness run the
    train shards are not here, and the harness times every batch from outside. One request is kept in
    flight, so the next batch is packed while this one trains."""

    def __init__(self, path, B, T, buffer_size):
        import socket
        import struct

        self._head, self._answer = struct.Struct("<III"), struct.Struct("<II")
        path, fd = os.path.abspath(path), None
        if len(os.fsencode(path)) > 107:  # a socket address holds 108 bytes: reach it through its folder's fd
            folder, name = os.path.split(path)
            fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
            path = "/proc/self/fd/%d/%s" % (fd, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        finally:
            if fd is not None:
                os.close(fd)
        self.request = self._head.pack(B, T, buffer_size)
        self.B, self.T, self.epoch = B, T, 1
        self.sock.sendall(self.request)

    def _exact(self, n):
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise RuntimeError("the harness's data feed closed")
            got += k
        return buf

    def next_rows(self, B, T):
        rB, rT = self._answer.unpack(bytes(self._exact(self._answer.size)))
        rows = np.frombuffer(self._exact(rB * (rT + 1) * 2), dtype=TOKEN_DTYPE).reshape(rB, rT + 1)
        self.sock.sendall(self.request)  # the next one, while this one trains
        return rows.astype(np.int64)


def make_dataloader(tokenizer, B, T, split, buffer_size=1000, device=None):
    """Infinite iterator of (inputs, targets, epoch): int64 tensors [B, T] on the device (CUDA when
    available, else CPU). Rows start with BOS at a document start; no padding.
    buffer_size is the best-fit buffer (documents held while packing), as in autoresearch.
    In a harness run the train split comes from the harness's feed (HARNESS_FEED), the same rows."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if split == "train" and FEED:
        stream = _FeedStream(os.path.join(FEED, "feed.sock"), B, T, buffer_size)
    else:
        data_dir, shards = _split_shards(split)
        stream = _RowStream(data_dir, shards, buffer_size)
    while True:
        x, y = _to_device(stream.next_rows(B, T), device, pinned=True)
        yield x, y, stream.epoch


def masked_sums(nats, targets, token_bytes):
    """(sum of nats, sum of bytes, scored count) over the targets whose byte length is > 0: special
    tokens are left out of both sums. The one scoring rule of evaluate_bpb and fixed/evaluate.py."""
    nbytes = token_bytes[targets.reshape(-1)]
    nats = nats.reshape(-1).double()
    scored = nbytes > 0
    return torch.where(scored, nats, torch.zeros_like(nats)).sum(), nbytes.sum(), scored.sum()


class _Logits(torch.nn.Module):
    """token ids [B, T] -> logits [B, T, V]: the one function the verified evaluator calls."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx):
        out = self.model(idx)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_model(model, out_dir=None):
    """Export the uncompiled model (torch.export, weights included) for the verified evaluator.

    Writes out_dir/model.pt2 and out_dir/export.json ({"ok", "error", ...}); returns that info.
    """
    out_dir = Path(out_dir or OUT_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "_orig_mod", model)  # torch.compile wraps the module: export the original
    was_training = module.training
    info = {"ok": False, "error": None, "file": EXPORT_FILE, "seq_len": MAX_SEQ_LEN, "vocab_size": VOCAB_SIZE,
            "dynamic_batch": None, "batch": None, "torch": torch.__version__}
    t0 = time.time()
    try:
        device = next(module.parameters()).device
        info["device"] = str(device)
        wrapper = _Logits(module).eval()
        example = torch.zeros((EXPORT_BATCH, MAX_SEQ_LEN), dtype=torch.long, device=device)
        example[:, 0] = _MANIFEST["tokenizer"]["bos_id"] if _MANIFEST else VOCAB_SIZE - len(SPECIAL_TOKENS)
        with torch.no_grad():
            try:
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
                info["dynamic_batch"] = True
            except Exception:  # noqa: BLE001 - some models only export with a fixed batch
                program = torch.export.export(wrapper, (example,))
                info["dynamic_batch"] = False
        info["batch"] = EXPORT_BATCH
        torch.export.save(program, out_dir / EXPORT_FILE)
        info["sha256"] = _sha256(out_dir / EXPORT_FILE)
        info["bytes"] = (out_dir / EXPORT_FILE).stat().st_size
        info["ok"] = True
    except Exception as e:  # noqa: BLE001 - any failure is reported, never a silent pass
        info["error"] = f"{type(e).__name__}: {e}"[:4000]
    module.train(was_training)
    info["seconds"] = round(time.time() - t0, 2)
    tmp = out_dir / (EXPORT_INFO + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, out_dir / EXPORT_INFO)
    return info


@torch.no_grad()
def evaluate_bpb(model, tokenizer, batch_size):
    """Bits per byte on exactly EVAL_TOKENS target tokens of the fixed val stream.

    The val rows (EVAL_TOKENS // MAX_SEQ_LEN of them) do not depend on batch_size. model(x, y,
    reduction='none') returns per-token losses in nats. Special tokens (byte length 0) are left out
    of both sums. Returns total nats / (ln 2 * total bytes).

    In verified mode (HARNESS_EVAL_MODE=export) the val split is not here: the model is exported for
    the harness's evaluator, which computes the score with fixed code; this returns NaN ("deferred").
    """
    if EVAL_MODE == "export":
        info = export_model(model)
        state = "exported" if info["ok"] else f"export FAILED ({info['error']})"
        print(f"evaluate_bpb: evaluation deferred to the harness's verified evaluator; model {state}", flush=True)
        return float("nan")
    data_dir, shards = _split_shards("val")
    device = next(model.parameters()).device
    token_bytes = get_token_bytes(device)
    T = MAX_SEQ_LEN
    n_rows = EVAL_TOKENS // T
    stream = _RowStream(data_dir, shards, single_pass=True)
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    done = 0
    while done < n_rows:
        b = min(batch_size, n_rows - done)
        try:
            rows = stream.next_rows(b, T)
        except EOFError:
            raise RuntimeError("the val split is shorter than EVAL_TOKENS; rebuild the cache") from None
        x, y = _to_device(rows, device, pinned=False)
        nats, nbytes, _ = masked_sums(model(x, y, reduction="none"), y, token_bytes)
        total_nats += nats
        total_bytes += nbytes
        done += b
    return (total_nats / (math.log(2) * total_bytes.double())).item()

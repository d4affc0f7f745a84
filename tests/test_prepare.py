"""fixed/prepare.py: the tiny corpus, the tokenizer, token byte lengths, the dataloader and evaluate_bpb."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import load_prepare


# --- the synthetic corpus and its entropy floor ------------------------------------------------

def test_markov_floor_matches_monte_carlo(prepare_mod, tiny_bench):
    """The analytic entropy rate equals the generator's own average surprisal on a long sample."""
    cfg = tiny_bench.data
    alphabet, P, pi = prepare_mod.markov_chain(cfg)
    h = prepare_mod.markov_entropy_rate(P, pi)
    docs = prepare_mod.generate_markov_docs(cfg, 400_000, seed=99)
    index = {c: i for i, c in enumerate(alphabet)}
    V = len(alphabet)
    surprisal = []
    for doc in docs:
        ids = np.array([index[c] for c in doc])
        state = ids[:-2] * V + ids[1:-1]
        surprisal.append(-np.log2(P[state, ids[2:]]))
    s = np.concatenate(surprisal)
    stderr = s.std() / math.sqrt(len(s))
    assert abs(s.mean() - h) < 4 * stderr + 1e-3, (s.mean(), h, stderr)
    assert 1.0 < h < math.log2(V)  # structured, but not trivial


def test_markov_generation_is_deterministic(prepare_mod, tiny_bench):
    a = prepare_mod.generate_markov_docs(tiny_bench.data, 20_000, seed=5)
    b = prepare_mod.generate_markov_docs(tiny_bench.data, 20_000, seed=5)
    c = prepare_mod.generate_markov_docs(tiny_bench.data, 20_000, seed=6)
    assert a == b and a != c
    lo, hi = tiny_bench.data["doc_bytes"]
    assert all(lo <= len(d) <= hi for d in a)
    assert set("".join(a)) <= set(tiny_bench.data["alphabet"])


def test_cache_records_floor_and_unigram(tiny_cache):
    stats = tiny_cache.stats
    assert stats["entropy_floor_bpb"] < stats["unigram_bpb"]
    assert stats["val_tokens"] > 0 and stats["train_tokens"] > stats["val_tokens"]


# --- tokenizer -------------------------------------------------------------------------------

def test_tokenizer_round_trip(prepare_mod):
    tok = prepare_mod.Tokenizer.from_directory()
    assert tok.get_vocab_size() == prepare_mod.VOCAB_SIZE == 512
    text = "the quick brown fox, jumps.\nover ünïcödé 😀 and 漢字 too"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    bos = tok.get_bos_token_id()
    assert tok.encode(text, prepend=bos)[0] == bos
    assert tok.encode([text, "ab"], prepend="<|reserved_0|>")[1][0] == bos
    assert bos not in ids


@pytest.fixture(scope="module")
def multilingual_tokenizer(tmp_path_factory):
    """A tokenizer trained on emoji and CJK, so that merges end inside multi-byte characters."""
    prepare = load_prepare(None)
    texts = ["😀😃😄 漢字かな交じり文 ünïcödé " * 20, "日本語のテキスト 🎉🎊 données naïves " * 20] * 5
    ranks = prepare.train_tokenizer(texts, 400)
    d = tmp_path_factory.mktemp("tok")
    prepare.save_tokenizer(ranks, d, "test")
    enc, ranks, _ = prepare.load_encoding(d)
    return prepare, enc, prepare.token_byte_lengths(ranks, 400 + len(prepare.SPECIAL_TOKENS))


def test_token_bytes_counts_raw_bytes_not_replacement_chars(multilingual_tokenizer):
    prepare, enc, nbytes = multilingual_tokenizer
    partial = [r for r in range(256) if (r >= 0x80)]  # lone bytes of multi-byte characters
    for r in partial:
        assert nbytes[r] == 1  # a UTF-8 decode would give U+FFFD, 3 bytes (autoresearch #384)
    assert all(nbytes[-len(prepare.SPECIAL_TOKENS):] == 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
       | st.text(alphabet="😀😃漢字かなü é\n ", max_size=100))
def test_token_byte_lengths_sum_to_utf8_length(multilingual_tokenizer, text):
    _, enc, nbytes = multilingual_tokenizer
    ids = enc.encode_ordinary(text)
    assert int(nbytes[ids].sum()) == len(text.encode("utf-8"))


def test_get_token_bytes_on_tiny(prepare_mod):
    tb = prepare_mod.get_token_bytes("cpu")
    tok = prepare_mod.Tokenizer.from_directory()
    assert tb.shape == (prepare_mod.VOCAB_SIZE,)
    assert tb[tok.get_bos_token_id()] == 0
    for t in (0, 97, 300, 507):
        assert tb[t] == len(tok.token_bytes(t))


# --- runtime constants -----------------------------------------------------------------------

def test_constants_come_from_the_environment(prepare_mod, tiny_bench):
    assert prepare_mod.MAX_SEQ_LEN == tiny_bench.seq_len
    assert prepare_mod.EVAL_TOKENS == tiny_bench.eval_tokens
    assert prepare_mod.TIME_BUDGET == 12.5
    assert prepare_mod.SEED == 7
    assert prepare_mod.PEAK_FLOPS is None


def test_defaults_are_autoresearch_without_a_benchmark():
    p = load_prepare(None)
    assert (p.MAX_SEQ_LEN, p.TIME_BUDGET, p.EVAL_TOKENS, p.VOCAB_SIZE) == (2048, 300.0, 40 * 524288, 8192)
    with pytest.raises(RuntimeError, match="HARNESS_DATA_DIR"):
        p.Tokenizer.from_directory()


# --- dataloader ------------------------------------------------------------------------------

def test_dataloader_rows_start_with_bos_and_shift(prepare_mod):
    tok = prepare_mod.Tokenizer.from_directory()
    bos = tok.get_bos_token_id()
    x, y, epoch = next(prepare_mod.make_dataloader(tok, 8, 64, "train"))
    assert x.shape == y.shape == (8, 64) and x.dtype == torch.int64 and epoch == 1
    assert (x[:, 0] == bos).all()
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_dataloader_is_deterministic_and_packs_whole_documents(prepare_mod):
    tok = prepare_mod.Tokenizer.from_directory()
    bos = tok.get_bos_token_id()
    a = prepare_mod.make_dataloader(tok, 4, 128, "train")
    b = prepare_mod.make_dataloader(tok, 4, 128, "train")
    for _ in range(5):
        xa, ya, _ = next(a)
        xb, yb, _ = next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Every BOS inside a row starts a document that appears in the stored stream right there.
    data_dir = prepare_mod.DATA_DIR
    manifest = json.loads(open(f"{data_dir}/manifest.json").read())
    stream = np.fromfile(f"{data_dir}/{manifest['splits']['train'][0]['tokens']}", dtype=np.uint16)
    row = torch.cat([xa[0], ya[0, -1:]]).numpy()
    cut = list(np.flatnonzero(row == bos)) + [len(row)]
    for s, e in zip(cut, cut[1:]):
        piece = row[s:e]
        hits = np.flatnonzero(stream == bos)
        assert any(np.array_equal(stream[h:h + len(piece)], piece) for h in hits)


def test_dataloader_epochs_advance(prepare_mod):
    tok = prepare_mod.Tokenizer.from_directory()
    loader = prepare_mod.make_dataloader(tok, 256, 256, "train")
    epochs = [next(loader)[2] for _ in range(60)]
    assert epochs[0] == 1 and epochs[-1] >= 2 and epochs == sorted(epochs)


# --- evaluate_bpb ----------------------------------------------------------------------------

class Uniform(torch.nn.Module):
    """Every token equally likely: log(V) nats per target."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0
        self.rows = 0

    def forward(self, x, y, reduction="mean"):
        self.calls += 1
        self.rows += x.shape[0]
        return torch.full(y.shape, math.log(self.vocab)) + 0 * self.dummy


def _scored(prepare_mod):
    """Hand count over the val rows: scored targets and their bytes."""
    stream = prepare_mod._RowStream(prepare_mod.DATA_DIR, single_pass=True, shards=
                                    json.loads(open(f"{prepare_mod.DATA_DIR}/manifest.json").read())["splits"]["val"])
    rows = stream.take(prepare_mod.EVAL_TOKENS // prepare_mod.MAX_SEQ_LEN, prepare_mod.MAX_SEQ_LEN)
    nb = prepare_mod.get_token_bytes().numpy()[rows[:, 1:]]
    return int((nb > 0).sum()), int(nb.sum())


@pytest.mark.parametrize("batch_size", [1, 7, 64, 512, 1000])
def test_evaluate_bpb_uniform_model(prepare_mod, batch_size):
    n_scored, n_bytes = _scored(prepare_mod)
    model = Uniform(prepare_mod.VOCAB_SIZE)
    bpb = prepare_mod.evaluate_bpb(model, prepare_mod.Tokenizer.from_directory(), batch_size)
    assert bpb == pytest.approx(math.log2(prepare_mod.VOCAB_SIZE) * n_scored / n_bytes, rel=1e-7)  # float32 log(V)
    # Exactly EVAL_TOKENS targets whatever the batch size.
    assert model.rows * prepare_mod.MAX_SEQ_LEN == prepare_mod.EVAL_TOKENS
    assert model.calls == math.ceil(prepare_mod.EVAL_TOKENS // prepare_mod.MAX_SEQ_LEN / batch_size)


def test_evaluate_bpb_leaves_specials_out(prepare_mod):
    """Nats on special-token targets are ignored: a huge loss there changes nothing."""
    bos = prepare_mod.Tokenizer.from_directory().get_bos_token_id()

    class SpikeOnBos(Uniform):
        def forward(self, x, y, reduction="mean"):
            out = super().forward(x, y, reduction)
            return torch.where(y == bos, torch.full_like(out, 1e6), out)

    tok = prepare_mod.Tokenizer.from_directory()
    plain = prepare_mod.evaluate_bpb(Uniform(512), tok, 128)
    spiked = prepare_mod.evaluate_bpb(SpikeOnBos(512), tok, 128)
    assert plain == spiked


# --- the cache: verification and rebuild -------------------------------------------------------

def test_second_prepare_verifies_and_reuses(tiny_bench, tiny_cache):
    from harness.data import prepare_benchmark

    messages = []
    info = prepare_benchmark(tiny_bench, data_dir=tiny_cache.data_dir, log=messages.append)
    assert info.manifest_sha256 == tiny_cache.manifest_sha256
    assert any("verified" in m for m in messages)


def test_corrupt_file_is_detected_and_rebuilt(tiny_bench, tmp_path):
    from harness.data import DataError, cache_info, prepare_benchmark

    info = prepare_benchmark(tiny_bench, data_dir=tmp_path / "tiny")
    shard = info.data_dir / info.manifest["splits"]["train"][0]["tokens"]
    original = shard.read_bytes()
    manifest_bytes = (info.data_dir / "manifest.json").read_bytes()
    with open(shard, "r+b") as f:  # flip bytes, same size
        f.seek(1000)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(DataError, match="corrupt"):
        cache_info(tiny_bench, info.data_dir)
    messages = []
    rebuilt = prepare_benchmark(tiny_bench, data_dir=info.data_dir, log=messages.append)
    assert any("corrupt" in m and "rebuilding" in m for m in messages)
    assert shard.read_bytes() == original  # deterministic: the same train data again
    public = lambda files: {k: v for k, v in files.items() if not k.startswith("val/")}  # noqa: E731
    assert public(rebuilt.manifest["files"]) == public(info.manifest["files"])
    # The val text is drawn anew from the OS (it is secret), so the manifest changes with it.
    assert rebuilt.manifest["splits"]["val"] != info.manifest["splits"]["val"]
    assert (info.data_dir / "manifest.json").read_bytes() != manifest_bytes
    # A partial file (truncated) is caught by its size.
    shard.write_bytes(original[:100])
    with pytest.raises(DataError, match="truncated"):
        cache_info(tiny_bench, info.data_dir)


def test_parquet_source_through_datasets(tmp_path):
    """The hub path's loading code on local parquet files the test writes (no download)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.benchmarks import parse_benchmarks

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "émoji 😀", "数据", "the", "of", "42", "1999"]

    def doc():
        return " ".join(rng.choice(words, size=int(rng.integers(5, 60))))

    src = tmp_path / "src"
    src.mkdir()
    for i in (0, 1, 6542):
        pq.write_table(pa.table({"text": [doc() for _ in range(300)]}), src / f"shard_{i:05d}.parquet")
    doc_ = {"schema_version": 1, "benchmarks": {"pq": {
        "description": "test", "data": {"source": "hf_parquet", "repo": "x/y", "train_shards": 2, "val_shard": 6542},
        "tokenizer": {"vocab_size": 320}, "seq_len": 64, "eval_tokens": 64 * 20, "time_budget_s": 5,
        "hard_timeout_s": 30, "model_hint": {}, "allowed_imports": ["prepare", "torch"],
        "limits": {"memory": "1g", "shm": "64m", "pids": 64, "tmpfs": "64m", "output": "64m"}}}}
    bench = parse_benchmarks(doc_)["pq"]
    from harness.data import prepare_benchmark

    info = prepare_benchmark(bench, data_dir=tmp_path / "cache" / "pq", source_dir=src)
    assert set(info.manifest["sources"]) == {"shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"}
    assert all(len(v["sha256"]) == 64 for v in info.manifest["sources"].values())
    assert info.manifest["splits"]["train"][0]["n_docs"] == 600
    assert info.manifest["splits"]["val"][0]["n_docs"] == 300
    p = load_prepare(info.data_dir)
    tok = p.Tokenizer.from_directory()
    text = "gamma 数据 émoji 😀 1999"
    assert tok.decode(tok.encode(text)) == text
    x, y, _ = next(p.make_dataloader(tok, 2, 64, "val"))
    assert (x[:, 0] == tok.get_bos_token_id()).all()


def test_missing_parquet_shard_is_a_clear_error(tmp_path):
    from harness.benchmarks import get_benchmark
    from harness.data import DataError, prepare_benchmark

    bench = get_benchmark("climbmix")
    with pytest.raises(DataError, match="shard_00000.parquet: missing"):
        prepare_benchmark(bench, data_dir=tmp_path / "c", source_dir=tmp_path)


def test_tiny_val_text_is_secret_but_its_floor_is_not(tiny_bench, tiny_cache, tmp_path):
    """Two preparations of tiny (two labs) share the chain, the train text and the floor; the val text
    comes from a seed drawn from the OS and cannot be rebuilt from benchmarks.yaml."""
    from harness.data import prepare_benchmark

    other = prepare_benchmark(tiny_bench, data_dir=tmp_path / "tiny")
    a, b = tiny_cache.manifest, other.manifest
    assert a["stats"]["entropy_floor_bpb"] == b["stats"]["entropy_floor_bpb"]
    assert a["files"]["train/00000.bin"] == b["files"]["train/00000.bin"]
    assert a["files"]["val/00000.bin"]["sha256"] != b["files"]["val/00000.bin"]["sha256"]
    # Regenerating "val" from the public seed (as the old scheme did) does not give this val text.
    p = load_prepare(None)
    public_val = p.generate_markov_docs(tiny_bench.data, 5_000, seed=tiny_bench.data["seed"] + 2)
    first_doc_tokens = np.fromfile(tiny_cache.data_dir / "val" / "00000.bin", dtype=np.uint16)[:64]
    enc, _, _ = p.load_encoding(tiny_cache.data_dir / "tokenizer")
    assert enc.decode(first_doc_tokens[1:40].tolist()) not in "".join(public_val)

"""Tests for harness.validate: static checks of a candidate train.py."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.validate import (
    DEFAULT_MAX_BYTES,
    Finding,
    ValidationReport,
    validate_file,
    validate_source,
)

ALLOWED = frozenset(
    {"torch", "numpy", "math", "time", "os", "sys", "gc", "json", "dataclasses", "functools",
     "typing", "contextlib", "collections", "itertools", "prepare"}
)

# A small but realistic candidate: every construct here must stay clean.
VALID_TRAIN_PY = textwrap.dedent(
    '''\
    """A tiny GPT for the tiny benchmark."""
    from __future__ import annotations

    import gc
    import json
    import math
    import os
    import time
    from dataclasses import dataclass

    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    import prepare
    from prepare import MAX_SEQ_LEN, SEED, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    torch.manual_seed(SEED)
    torch.cuda.manual_seed_all(SEED + 1)
    np.random.seed(prepare.SEED)
    rng = np.random.default_rng(SEED)
    gen = torch.Generator().manual_seed(SEED)
    OUT_DIR = os.environ.get("HARNESS_OUT_DIR", ".")


    @dataclass
    class Config:
        n_layer: int = 2
        n_embd: int = 64


    class GPT(nn.Module):
        def __init__(self, cfg: Config, vocab: int):
            super().__init__()
            self.wte = nn.Embedding(vocab, cfg.n_embd)
            self.head = nn.Linear(cfg.n_embd, vocab)

        def forward(self, x, y=None, reduction="mean"):
            logits = self.head(self.wte(x))
            logits = logits.view(-1, logits.size(-1))
            return F.cross_entropy(logits, y.view(-1), reduction=reduction)


    tokenizer = Tokenizer.from_directory()
    with open(os.path.join(prepare.DATA_DIR, "manifest.json")) as f:
        manifest = json.load(f)
    model = torch.compile(GPT(Config(), tokenizer.get_vocab_size()))
    loader = make_dataloader(tokenizer, 8, MAX_SEQ_LEN, "train")
    t0 = time.perf_counter()
    step = 0
    while time.perf_counter() - t0 < TIME_BUDGET:
        x, y, epoch = next(loader)
        loss = model(x, y)
        loss.backward()
        print(f"progress step={step} elapsed={time.perf_counter() - t0:.2f} loss={loss.item():.6f}")
        step += 1
    model.eval()
    val_bpb = evaluate_bpb(model, tokenizer, 8)
    with open(os.path.join(OUT_DIR, "fixed_lr_log.txt"), "w") as f:
        f.write(str(val_bpb))
    torch.save(model.state_dict(), os.path.join(OUT_DIR, "model.pt"))
    gc.collect()
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"depth:            {int(math.log2(8))}")
    '''
)


def lines(*source: str) -> str:
    """Source whose line N is the N-th argument, so line numbers read off the test."""
    return "\n".join(source) + "\n"


def check(tmp_path: Path, source: str | bytes, allowed=ALLOWED, **kwargs) -> ValidationReport:
    path = tmp_path / "train.py"
    if isinstance(source, str):
        path.write_text(source, encoding="utf-8")
    else:
        path.write_bytes(source)
    return validate_file(path, allowed, **kwargs)


def found(report: ValidationReport) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in report.findings]


# -- whole-file checks -----------------------------------------------------------


def test_valid_train_py_has_no_findings(tmp_path):
    report = check(tmp_path, VALID_TRAIN_PY)
    assert report.findings == [], [f.format() for f in report.findings]
    assert report.ok
    data = VALID_TRAIN_PY.encode()
    assert report.size == len(data)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.path == str(tmp_path / "train.py")


def test_syntax_error_reports_its_line(tmp_path):
    report = check(tmp_path, lines("import torch", "x = 1", "def f(:", "    pass"))
    assert found(report) == [(3, "syntax")]
    assert not report.ok
    assert report.errors[0].col == 7


def test_unclosed_bracket_is_a_syntax_error(tmp_path):
    report = check(tmp_path, lines("x = [1,", "", "y = 2"))
    assert [f.code for f in report.errors] == ["syntax"]
    assert report.errors[0].line == 1


def test_binary_blob_is_a_binary_error(tmp_path):
    blob = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4
    report = check(tmp_path, blob)
    assert [f.code for f in report.findings] == ["binary"]
    assert not report.ok
    assert report.sha256 == hashlib.sha256(blob).hexdigest()
    assert "UTF-8 text" in report.findings[0].message


def test_nul_byte_line_is_reported(tmp_path):
    report = check(tmp_path, b"import torch\nx = 1\ny = '\x00'\n")
    assert found(report) == [(3, "binary")]


def test_invalid_utf8_reports_the_line_of_the_first_bad_byte(tmp_path):
    data = b"import torch\n# caf\xc3\xa9 is fine\nx = 1  # \xff here\n# \xfe later\n"
    report = check(tmp_path, data)
    assert found(report) == [(3, "not-utf8")]
    finding = report.findings[0]
    assert finding.col == len("x = 1  # ") + 1
    assert "0xff" in finding.message and "UTF-8" in finding.message


def test_utf8_bom_is_accepted(tmp_path):
    report = check(tmp_path, b"\xef\xbb\xbfimport torch\n")
    assert report.ok and report.findings == []


def test_oversize_file_is_too_large_and_says_the_limit(tmp_path):
    source = "x = 1\n" * 200
    report = check(tmp_path, source, max_bytes=1000)
    assert found(report) == [(1, "too-large")]
    assert "1,000-byte limit" in report.findings[0].message
    # Size and hash cover the whole file, not just the part that was read.
    assert report.size == len(source)
    assert report.sha256 == hashlib.sha256(source.encode()).hexdigest()


def test_validate_source_checks_the_size_too():
    report = validate_source(b"x = 1\n" * 100, "train.py", ALLOWED, max_bytes=599)
    assert found(report) == [(1, "too-large")]
    assert report.size == 600


def test_default_limit_is_256_kib(tmp_path):
    assert DEFAULT_MAX_BYTES == 256 * 1024
    at_limit = b"#" * (DEFAULT_MAX_BYTES - 1) + b"\n"
    assert check(tmp_path, at_limit).ok
    report = check(tmp_path, at_limit + b"\n")
    assert [f.code for f in report.errors] == ["too-large"]


def test_validate_source_matches_validate_file(tmp_path):
    source = lines("import requests", "torch.manual_seed(1)")
    from_file = check(tmp_path, source)
    from_bytes = validate_source(source.encode(), str(tmp_path / "train.py"), ALLOWED)
    assert from_file == from_bytes


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        validate_file(tmp_path / "nope.py", ALLOWED)


def test_directory_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        validate_file(tmp_path, ALLOWED)


# -- imports ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expected",
    [
        (lines("import torch", "import wandb"), [(2, "forbidden-import")]),
        (lines("import os", "", "import scipy.linalg"), [(3, "forbidden-import")]),
        (lines("from transformers import AutoModel"), [(1, "forbidden-import")]),
        (lines("import torch", "from .utils import helper"), [(2, "forbidden-import")]),
        (lines("from . import utils"), [(1, "forbidden-import")]),
        (lines("import math", "import pandas as pd"), [(2, "forbidden-import")]),
        (lines("import math, wandb, torch"), [(1, "forbidden-import")]),
        (lines("def f():", "    import triton", "    return triton"), [(2, "forbidden-import")]),
        (lines("try:", "    import flash_attn", "except ImportError:", "    pass"),
         [(2, "forbidden-import")]),
        (lines("from __future__ import annotations", "import torch.nn.functional as F"), []),
        (lines("from torch.nn import functional", "from prepare import SEED"), []),
    ],
    ids=["plain", "dotted", "from", "relative-from", "relative-dot", "alias", "several",
         "in-function", "optional", "allowed-dotted", "allowed-from"],
)
def test_forbidden_import_lines(tmp_path, source, expected):
    assert found(check(tmp_path, source)) == expected


def test_forbidden_import_message_names_module_and_allow_list(tmp_path):
    report = check(tmp_path, lines("import requests.adapters"), allowed={"torch", "math"})
    finding = next(f for f in report.errors if f.code == "forbidden-import")
    assert "'requests.adapters'" in finding.message
    assert "allowed: math, prepare, torch" in finding.message
    assert "remove it" in finding.message


def test_relative_import_message_says_to_inline_the_code(tmp_path):
    report = check(tmp_path, lines("from .model import GPT"), allowed=ALLOWED | {"model"})
    assert found(report) == [(1, "forbidden-import")]
    assert "relative import 'from .model import ...'" in report.errors[0].message
    assert "copy the code into train.py" in report.errors[0].message


def test_forbidden_import_column_points_at_the_module(tmp_path):
    report = check(tmp_path, lines("import math, wandb"))
    assert [(f.line, f.col) for f in report.errors] == [(1, 14)]


@pytest.mark.parametrize(
    "call",
    [
        "m = __import__('json')",
        "m = importlib.import_module('json')",
        "exec('import json')",
        "x = eval('1 + 1')",
        "code = compile('x = 1', 'f', 'exec')",
        "f = __import__",
        "e = getattr(__builtins__, 'exec')",
    ],
)
def test_dynamic_import_is_an_error(tmp_path, call):
    report = check(tmp_path, lines("import importlib", call), allowed=ALLOWED | {"importlib"})
    assert found(report) == [(2, "dynamic-import")]
    assert "allow-list" in report.errors[0].message


def test_methods_named_like_builtins_are_not_dynamic_imports(tmp_path):
    report = check(tmp_path, lines(
        "import torch",
        "model = torch.compile(model)",
        "model.eval()",
        "def compile(x):",
        "    return x",
        "compile(model)",
    ))
    assert report.findings == []


# -- processes and network -------------------------------------------------------


@pytest.mark.parametrize(
    "source, line",
    [
        (lines("import os as o", "", "o.system('nvidia-smi')"), 3),
        (lines("import os", "x = 1", "run = os.popen"), 3),
        (lines("import os", "x = 1", "os.execvp('python', ['python'])"), 3),
        (lines("import os", "pid = os.fork()"), 2),
        (lines("import os", "os.spawnl(os.P_WAIT, '/bin/true')"), 2),
        (lines("import os", "os.kill(os.getpid(), 9)"), 2),
        (lines("import os", "getattr(os, 'system')('ls')"), 2),
        (lines("import sys", "sys.modules['subprocess'].run(['ls'])"), 2),
    ],
    ids=["alias", "reference", "exec", "fork", "spawn", "kill", "getattr", "sys-modules"],
)
def test_process_calls_are_subprocess_errors(tmp_path, source, line):
    assert found(check(tmp_path, source)) == [(line, "subprocess")]


def test_subprocess_via_from_import_is_flagged_at_import_and_use(tmp_path):
    report = check(tmp_path, lines("from os import system", "import torch", "system('ls')"))
    assert found(report) == [(1, "subprocess"), (3, "subprocess")]
    assert "'os.system'" in report.errors[1].message


def test_subprocess_module_is_flagged_even_when_allowed(tmp_path):
    source = lines("import subprocess as sp", "sp.run(['ls'])", "from multiprocessing import Pool")
    report = check(tmp_path, source, allowed=ALLOWED | {"subprocess", "multiprocessing"})
    assert found(report) == [(1, "subprocess"), (2, "subprocess"), (3, "subprocess")]
    assert "'subprocess.run'" in report.errors[1].message


def test_forbidden_subprocess_import_gets_both_findings(tmp_path):
    report = check(tmp_path, lines("import subprocess"))
    assert sorted(f.code for f in report.errors) == ["forbidden-import", "subprocess"]


def test_signal_handlers_are_flagged_but_constants_are_not(tmp_path):
    report = check(tmp_path, lines(
        "import signal",
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "print(signal.SIGINT)",
    ), allowed=ALLOWED | {"signal"})
    assert found(report) == [(2, "subprocess")]


@pytest.mark.parametrize(
    "source, line",
    [
        (lines("import socket", "s = socket.socket()"), 1),
        (lines("import torch", "from urllib.request import urlopen"), 2),
        (lines("import http.client"), 1),
        (lines("import requests as r", "r.get('http://x')"), 1),
    ],
)
def test_network_modules_are_socket_errors(tmp_path, source, line):
    report = check(tmp_path, source, allowed=ALLOWED | {"socket", "urllib", "http", "requests"})
    assert (line, "socket") in found(report)
    assert {f.code for f in report.errors} == {"socket"}


# -- writes to fixed paths -------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "open('fixed/prepare.py', 'w')",
        "open(prepare.__file__, mode='a')",
        "open(os.path.join(prepare.DATA_DIR, 'manifest.json'), 'r+')",
        "open(os.environ['HARNESS_DATA_DIR'] + '/train/0.bin', 'wb')",
        "open(os.path.expanduser('~/.cache/x'), 'x')",
        "open(p, 'w')",
        "open(prepare.__file__, mode)",
        "os.remove(prepare.__file__)",
        "os.replace('mine.py', '../fixed/prepare.py')",
        "os.chmod(DATA_DIR, 0o777)",
        "Path(prepare.__file__).write_text('')",
        "(Path(DATA_DIR) / 'manifest.json').write_bytes(b'{}')",
        "Path('fixed').joinpath('prepare.py').open('w')",
        "torch.save(model, os.path.join(DATA_DIR, 'm.pt'))",
    ],
)
def test_writes_to_fixed_paths_are_errors(tmp_path, statement):
    source = lines(
        "import os",
        "import torch",
        "from pathlib import Path",
        "import prepare",
        "from prepare import DATA_DIR",
        "p = os.path.dirname(prepare.__file__)",
        "mode = 'w'",
        statement,
    )
    report = check(tmp_path, source, allowed=ALLOWED | {"pathlib"})
    assert found(report) == [(8, "fixed-write")]
    assert "HARNESS_OUT_DIR" in report.errors[0].message


@pytest.mark.parametrize(
    "statement",
    [
        "open(prepare.__file__)",
        "open(os.path.join(DATA_DIR, 'manifest.json'), 'rb')",
        "open(os.path.join(OUT, 'fixed_seed.txt'), 'w')",
        "open('log.txt', 'w')",
        "Path(OUT, 'log.txt').write_text('fixed')",
        "name = 'prepare.py'.replace('.py', '')",
        "torch.save(model, os.path.join(OUT, 'prepare_copy.pt'))",
    ],
)
def test_reads_and_other_writes_are_fine(tmp_path, statement):
    source = lines(
        "import os",
        "import torch",
        "from pathlib import Path",
        "import prepare",
        "from prepare import DATA_DIR",
        "OUT = os.environ['HARNESS_OUT_DIR']",
        statement,
    )
    assert check(tmp_path, source, allowed=ALLOWED | {"pathlib"}).findings == []


def test_writes_through_a_helper_function_are_followed(tmp_path):
    source = lines(
        "import os",
        "def overwrite(path, data=b'x'):",
        "    with open(path, 'wb') as f:",
        "        f.write(data)",
        "def append_to(path, *, note):",
        "    overwrite(path=note)",
        "overwrite('/fixed/prepare.py')",
        "overwrite(os.path.join(os.environ['HARNESS_OUT_DIR'], 'ok.txt'))",
        "append_to('log.txt', note='/data/train/shard_000.bin')",
        "os.remove('/data/val/shard_000.bin')",
    )
    report = check(tmp_path, source)
    assert found(report) == [(7, "fixed-write"), (9, "fixed-write"), (10, "fixed-write")]
    assert "'/fixed/prepare.py'" in report.errors[0].message


# -- monkey-patching -------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "prepare.evaluate_bpb = lambda *a: 0.5",
        "prepare.TIME_BUDGET = 1",
        "prepare.TIME_BUDGET *= 10",
        "setattr(prepare, 'EVAL_TOKENS', 1024)",
        "del prepare.evaluate_bpb",
        "prepare.Tokenizer.encode = my_encode",
        "P.SEED = 0",
        "evaluate_bpb = lambda *a: 0.5",
        "def evaluate_bpb(model, tokenizer, batch_size): return 0.5",
        "TIME_BUDGET = 1e9",
        "vars(prepare)['evaluate_bpb'] = None",
        "prepare.MODEL_HINT['depth'] = 2",
        "time.time = lambda: 0.0",
        "time.perf_counter = lambda: 0.0",
        "t.monotonic = lambda: 0.0",
        "setattr(time, 'perf_counter', lambda: 0.0)",
        "perf_counter = lambda: 0.0",
        "os.environ['HARNESS_TIME_BUDGET'] = '1e9'",
        "os.environ.update({'HARNESS_DATA_DIR': '/tmp/mine'})",
        "sys.modules['prepare'] = fake",
    ],
)
def test_patching_prepare_or_the_clock_is_an_error(tmp_path, statement):
    source = lines(
        "import os, sys, time",
        "import time as t",
        "from time import perf_counter",
        "import prepare",
        "import prepare as P",
        "from prepare import evaluate_bpb, TIME_BUDGET",
        statement,
    )
    report = check(tmp_path, source)
    assert found(report) == [(7, "patch-fixed")]
    message = report.errors[0].message
    assert "remove it" in message or "use it as is" in message


def test_using_prepare_and_time_normally_is_fine(tmp_path):
    source = lines(
        "import os, time",
        "import prepare",
        "from prepare import TIME_BUDGET",
        "budget = prepare.TIME_BUDGET * 0.9",
        "deadline = time.time() + TIME_BUDGET",
        "os.environ['TOKENIZERS_PARALLELISM'] = 'false'",
        "class Timer:",
        "    def __init__(self):",
        "        self.time = time.perf_counter()",
        "tokenizer = prepare.Tokenizer.from_directory()",
        "tokenizer.cache = {}",
        "hint = prepare.MODEL_HINT.copy()",
        "hint['depth'] = 4",
    )
    assert check(tmp_path, source).findings == []


# -- seeds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "torch.manual_seed(1337)",
        "torch.cuda.manual_seed(0)",
        "torch.cuda.manual_seed_all(42)",
        "random.seed(1)",
        "np.random.seed(seed=7)",
        "numpy.random.seed(-1)",
        "g = torch.Generator().manual_seed(3)",
        "g = torch.Generator(device='cuda'); g.manual_seed(3)",
        "rng = np.random.default_rng(123)",
    ],
)
def test_hardcoded_seed_is_a_warning_only(tmp_path, statement):
    source = lines("import random", "import numpy", "import numpy as np", "import torch", statement)
    report = check(tmp_path, source, allowed=ALLOWED | {"random"})
    assert found(report) == [(5, "hardcoded-seed")]
    assert report.ok
    assert report.errors == []
    assert report.warnings[0].severity == "warning"
    assert "use prepare.SEED" in report.warnings[0].message


@pytest.mark.parametrize(
    "statement",
    [
        "torch.manual_seed(SEED)",
        "torch.manual_seed(prepare.SEED + rank)",
        "torch.cuda.manual_seed_all(seed)",
        "np.random.seed(int(os.environ['HARNESS_SEED']))",
        "rng = np.random.default_rng()",
        "g = torch.Generator().manual_seed(SEED)",
    ],
)
def test_seed_from_a_name_gives_no_finding(tmp_path, statement):
    source = lines(
        "import os", "import numpy as np", "import torch", "import prepare",
        "from prepare import SEED", "rank = 0", "seed = SEED", statement,
    )
    assert check(tmp_path, source).findings == []


# -- report and finding ----------------------------------------------------------


def test_finding_format():
    finding = Finding("train.py", 12, 1, "error", "forbidden-import", "import 'x': remove it")
    assert finding.format() == "train.py:12:1: error forbidden-import: import 'x': remove it"


def test_report_format_of_a_real_finding(tmp_path):
    report = check(tmp_path, lines("import torch", "import wandb"))
    first = report.findings[0].format()
    assert first.startswith(f"{tmp_path / 'train.py'}:2:8: error forbidden-import: import 'wandb'")


def test_aliases_of_process_functions_are_followed(tmp_path):
    report = check(tmp_path, lines("import os", "run = os.popen", "run('ls')"))
    assert found(report) == [(2, "subprocess"), (3, "subprocess")]


def test_findings_are_sorted_and_split_by_severity(tmp_path):
    report = check(tmp_path, lines("import torch", "torch.manual_seed(0)", "import wandb"))
    assert found(report) == [(2, "hardcoded-seed"), (3, "forbidden-import")]
    assert [f.code for f in report.errors] == ["forbidden-import"]
    assert [f.code for f in report.warnings] == ["hardcoded-seed"]
    assert not report.ok


def test_to_dict_is_json_ready(tmp_path):
    report = check(tmp_path, lines("import torch", "torch.manual_seed(0)", "import wandb"))
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is False
    assert (d["error_count"], d["warning_count"]) == (1, 1)
    assert d["sha256"] == report.sha256 and d["size"] == report.size
    assert d["findings"][1] == {
        "path": report.path, "line": 3, "col": 8, "severity": "error",
        "code": "forbidden-import", "message": report.findings[1].message,
    }


# -- robustness ------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_report_not_an_exception(data):
    report = validate_source(data, "train.py", ALLOWED)
    assert report.size == len(data)
    assert report.ok == (not any(f.severity == "error" for f in report.findings))
    assert all(f.line >= 1 and f.col >= 1 for f in report.findings)


SNIPPETS = [
    "import os", "import prepare", "from prepare import *", "import torch as t", "o = os",
    "x = o.system", "getattr(o, x)", "a = b = c", "a, b = 1, 2", "del a", "open(a, b)",
    "t.manual_seed(b)", "setattr(a, 'b', 1)", "(lambda: 0)()", "prepare.X = 1", "x[0]: int = 1",
    "f'{a}{b!r}'", "async def f(): await g()", "[y for y in x if (z := y)]",
]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(SNIPPETS), max_size=12))
def test_arbitrary_snippet_mixes_never_crash(snippets):
    report = validate_source("\n".join(snippets).encode(), "train.py", ALLOWED)
    assert all(f.severity in ("error", "warning") for f in report.findings)


def test_deep_nesting_is_reported_not_raised(tmp_path):
    report = check(tmp_path, "x = a" + ".b" * 2000 + "\n")
    assert report.errors and report.errors[0].code in ("syntax", "too-complex")
    report = check(tmp_path, "x = a" + ".b" * 50000 + "\n")
    assert report.errors and report.errors[0].code in ("syntax", "too-complex")


# -- coding cookies: the text checked is the text Python runs -------------------------------


def test_utf7_cookie_that_hides_an_import_is_refused(tmp_path):
    # Python decodes "+AAo-" as a line break under utf-7: the comment hides "import subprocess".
    source = b"# coding: utf-7\n# +AAo-import subprocess\nprint('hi')\n"
    report = check(tmp_path, source)
    assert found(report) == [(1, "encoding")] and not report.ok
    message = report.errors[0].message
    assert "utf-7" in message and "UTF-8" in message and "cookie" in message


@pytest.mark.parametrize(
    "source, line",
    [
        (b"# -*- coding: latin-1 -*-\nx = '\xe9'\n", 1),
        (b"#!/usr/bin/env python\n# vim: set fileencoding=cp1252 :\nx = 1\n", 2),
        (b"\n# coding=iso-8859-15\nx = 1\n", 2),
        (b"# comment\r# coding: latin-1\rx = '\xe9'\n", 2),  # a lone CR ends a line for Python too
        (b"\r# coding: latin-1\rimport os\n", 2),  # which tokenize.detect_encoding alone misses
        (b"# coding: no-such-codec\nx = 1\n", 1),
        (b"\xef\xbb\xbf# coding: latin-1\nx = 1\n", 1),  # BOM and a cookie that disagree
    ],
)
def test_non_utf8_cookies_are_errors_at_their_line(tmp_path, source, line):
    report = check(tmp_path, source)
    assert found(report) == [(line, "encoding")]
    assert "save train.py as UTF-8" in report.errors[0].message
    assert report.errors[0].format().startswith(f"{tmp_path / 'train.py'}:{line}:1: error encoding: ")


@pytest.mark.parametrize(
    "source",
    [
        b"# -*- coding: utf-8 -*-\nimport torch\n",
        b"#!/usr/bin/env python3\n# coding: utf8\nimport torch\n",
        b"# coding=UTF_8\nimport torch\n",
        b"\xef\xbb\xbf# coding: utf-8\nimport torch\n",
        b"import torch\n# coding: latin-1 (line 2 after code: Python ignores it)\n",
        b"import torch\n\n\n# coding: latin-1 (line 4: ignored)\n",
    ],
)
def test_utf8_cookies_and_ignored_cookies_are_fine(tmp_path, source):
    assert check(tmp_path, source).findings == []


def test_what_python_decodes_is_what_is_refused(tmp_path):
    """The check agrees with Python's own decoder: a file it lets through compiles to the same AST from
    the bytes (Python's rules) as from the UTF-8 text the other checks read."""
    import ast

    for source in (b"# coding: utf-7\n# +AAo-import subprocess\n", b"# coding: latin-1\nx = '\xc3\xa9'\n",
                   b"# coding: utf-8\nx = '\xc3\xa9'\n", b"x = 1\n"):
        report = check(tmp_path, source)
        same = ast.dump(ast.parse(source)) == ast.dump(ast.parse(source.decode("utf-8")))
        assert report.ok == same, source


# -- routes around the allow-list that can only be warned about -----------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "m = sys.modules.get('json')",
        "m = sys.modules['json']",
        "mods = sys.modules",
        "d = vars(sys)",
        "f = getattr(__builtins__, name)",
        "f = __builtins__.__getattribute__(name)",
        "g = globals()['__builtins__']",
        "g = globals().get(name)",
        "m = getattr(importlib, name)('json')",
    ],
)
def test_dynamic_access_is_a_warning(tmp_path, statement):
    source = lines("import sys", "import importlib", "name = 'ex' + 'ec'", statement)
    report = check(tmp_path, source, allowed=ALLOWED | {"importlib"})
    assert found(report) == [(4, "dynamic-access")], [f.format() for f in report.findings]
    assert report.ok and report.warnings[0].severity == "warning"
    assert "allow-list" in report.warnings[0].message and "container" in report.warnings[0].message


def test_from_sys_import_modules_is_a_warning_at_import_and_use(tmp_path):
    report = check(tmp_path, lines("from sys import modules", "m = modules['json']"))
    assert found(report) == [(1, "dynamic-access"), (2, "dynamic-access")] and report.ok


def test_dynamic_access_warning_gives_way_to_an_error_on_the_same_line(tmp_path):
    report = check(tmp_path, lines("import sys", "sys.modules['subprocess'].run(['ls'])",
                                   "sys.modules['prepare'] = None"))
    assert found(report) == [(2, "subprocess"), (3, "patch-fixed")]


def test_exec_eval_compile_stay_errors(tmp_path):
    for statement in ("exec(code)", "eval(code)", "compile(code, 'f', 'exec')", "__import__(name)",
                      "getattr(__builtins__, 'eval')", "vars(__builtins__)['exec']"):
        report = check(tmp_path, lines("code = name = 'x'", statement))
        assert found(report) == [(2, "dynamic-import")], statement


def test_finding_format_cleans_control_characters_but_to_dict_keeps_them():
    finding = Finding("tr\x1b[2Jain\u202e.py", 1, 1, "error", "syntax", "bad\rkeep\x1b]0;x\x07")
    assert finding.format() == "train.py:1:1: error syntax: bad keep"
    assert finding.path == "tr\x1b[2Jain\u202e.py"

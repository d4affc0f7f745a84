"""The verified evaluation in real containers, against a model server that is the adversary's: it tries
to signal the scorer, write where the scorer reads, and read the val split, then serves honestly.
The scorer must finish untouched, with the honest score."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from docker_support import IMAGE, docker_client  # noqa: E402,F401

from harness.backends.base import RunRequest  # noqa: E402
from harness.backends.docker import DockerBackend  # noqa: E402
from harness.pipeline.request import run_env  # noqa: E402
from harness.pipeline.evaluate import evaluator_requests, run_evaluator  # noqa: E402
from tests.conftest import REPO, load_prepare  # noqa: E402
from tests.test_verified_eval import TinyLM  # noqa: E402

HOSTILE = r'''
import os, signal, sys
report = []
killed = 0
for pid in range(1, 4096):
    if pid == os.getpid():
        continue
    try:
        os.kill(pid, signal.SIGKILL)
        killed += 1
    except OSError:
        pass
report.append(f"signalled {killed} processes")
for target in ("/mnt/sock/model.sock", "/mnt/sock/eval.json", "/mnt/export/model.pt2"):
    try:
        with open(target + ".evil", "w") as f:
            f.write("x")
        report.append(f"WROTE {target}")
    except OSError as e:
        report.append(f"cannot write {target}: {e.strerror}")
report.append("val visible: " + str(any(os.path.exists(p) for p in ("/data/val", "/data/manifest.json"))))
print("hostile:", "; ".join(report), flush=True)
os.execv(sys.executable, [sys.executable, "/fixed/model_server.py", *sys.argv[1:]])
'''


@pytest.mark.docker
def test_a_hostile_model_server_cannot_touch_the_scorer(tiny_cache, tiny_bench, tmp_path, docker_client):  # noqa: F811
    run_dir = tmp_path / "run"
    p = load_prepare(tiny_cache.data_dir)
    assert p.export_model(TinyLM(p.VOCAB_SIZE), run_dir / "out")["ok"]
    honest = p.evaluate_bpb(TinyLM(p.VOCAB_SIZE), p.Tokenizer.from_directory(), 64)
    (run_dir / "out" / "hostile.py").write_text(HOSTILE)  # the candidate's own output folder
    train = RunRequest(run_id="pytest-hostile-000000", train_py=run_dir / "train.py", benchmark=tiny_bench,
                       data_dir=tiny_cache.data_dir, fixed_dir=REPO / "fixed", run_dir=run_dir,
                       env=run_env(tiny_bench, tiny_cache.data_dir, run_dir, 1.0, 1, None))
    scorer, servers = evaluator_requests(train, tiny_bench)
    servers[0].command = ["{python}", "{export}/hostile.py", *servers[0].command[2:]]
    result = run_evaluator(train, tiny_bench, DockerBackend(image=IMAGE), requests=(scorer, servers))
    log = (servers[0].run_dir / "log.txt").read_text()
    assert "hostile:" in log, log
    assert "cannot write /mnt/sock/model.sock: Read-only file system" in log
    assert "cannot write /mnt/export/model.pt2: Read-only file system" in log
    assert "val visible: False" in log and "WROTE" not in log
    assert result["ok"], result
    assert result["val_bpb"] == pytest.approx(honest, rel=1e-5)
    assert not list((run_dir / "eval" / "sock").glob("*.evil"))

"""The docker backend on a real daemon: the ordinary paths (see tests/adversarial/ for attacks)."""

from __future__ import annotations

import _thread
import io
import json
import os
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docker_support import (  # noqa: E402,F401
    IMAGE,
    SESSION_PREFIX,
    assert_no_leftovers,
    docker_client,
    duration,
    sandbox,
)

from harness.backends.docker import (  # noqa: E402
    DockerBackend,
    KeeperLine,
    container_spec,
    docker_available,
    extract_output,
    janitor,
)

pytestmark = pytest.mark.docker

HAPPY = r'''
import json, os, sys, time
import prepare
print("progress step=1 elapsed=0.01 budget=2.0 loss=2.5 lr_mult=1.000 tok_s=10 mfu=unknown")
print("to stderr", file=sys.stderr)
info = {
    "env": {k: v for k, v in os.environ.items() if k.startswith(("HARNESS_", "PYTHON", "HOME", "NVIDIA"))},
    "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
    "manifest": prepare.MANIFEST, "benchmark": prepare.BENCHMARK,
    "argv": sys.argv,
}
print("INFO " + json.dumps(info))
with open("/out/result.txt", "w") as f:
    f.write("written inside")
print("---")
print("val_bpb:          1.234567")
'''


def info_line(lines):
    return json.loads(next(line for line in lines if line.startswith("INFO "))[5:])


def test_happy_path(sandbox):
    outcome, lines, req = sandbox.run(HAPPY)
    assert outcome.infra_error is None, outcome.infra_error
    assert outcome.exit_code == 0
    assert not outcome.timed_out and not outcome.aborted and not outcome.oom_killed
    assert outcome.backend == "docker" and outcome.isolated is True
    assert outcome.image.startswith("sha256:")
    assert outcome.image == sandbox.client.images.get(IMAGE).id
    assert outcome.image_tag == IMAGE
    # live lines, stdout and stderr both; in order within a stream (the two streams are separate
    # pipes, so where a stderr line lands among stdout lines is not fixed)
    assert "to stderr" in lines
    stdout_lines = [line for line in lines if line != "to stderr"]
    assert stdout_lines[0].startswith("progress step=1")
    assert stdout_lines[-1] == "val_bpb:          1.234567"
    # the log file holds the same lines
    assert outcome.log_path == req.run_dir / "log.txt"
    assert outcome.log_path.read_text().splitlines() == lines
    assert not outcome.log_truncated
    # the harness's clock
    assert outcome.started_at <= outcome.first_output_at <= outcome.ended_at
    assert duration(outcome) < 15
    # inside: the environment contract, the container paths, the user
    info = info_line(lines)
    env = info["env"]
    assert env["HARNESS_DATA_DIR"] == "/data" and env["HARNESS_OUT_DIR"] == "/out"
    assert env["PYTHONPATH"] == "/fixed" and env["PYTHONUNBUFFERED"] == "1" and env["HOME"] == "/tmp"
    assert env["HARNESS_BENCHMARK"] == "tiny" and env["HARNESS_SEED"] == "1"
    assert "NVIDIA_DRIVER_CAPABILITIES" not in env
    assert info["uid"] != 0 and info["gid"] != 0
    assert info["cwd"] == "/work"
    assert info["argv"] == ["/work/train.py"]
    assert info["manifest"]["benchmark"] == "tiny"
    # /out (a tmpfs) was copied to run_dir/out on the host; the candidate was copied into the run dir
    assert (req.run_dir / "out" / "result.txt").read_text() == "written inside"
    assert outcome.output_bytes == len("written inside")
    assert (req.run_dir / "out" / "result.txt").stat().st_uid == os.getuid()  # the invoking user's
    # the runtime it ran under, with its version
    assert outcome.runtime == "runc" and outcome.runtime_version.startswith("runc ")
    assert outcome.kill_reason is None
    assert (req.run_dir / "train.py").read_text() == req.train_py.read_text()


def test_exit_code_is_recorded(sandbox):
    outcome, lines, _ = sandbox.run("import sys\nprint('bye')\nsys.exit(3)\n")
    assert outcome.exit_code == 3
    assert not outcome.timed_out and outcome.infra_error is None
    assert lines == ["bye"]


def test_no_output_first_output_none(sandbox):
    outcome, lines, _ = sandbox.run("pass\n")
    assert outcome.exit_code == 0 and lines == []
    assert outcome.first_output_at is None
    assert outcome.log_path.read_bytes() == b""


def test_command_override(sandbox):
    outcome, lines, _ = sandbox.run("print('not run')\n", command=["python3", "-c", "print('evaluator')"])
    assert outcome.exit_code == 0
    assert lines == ["evaluator"]


def test_partial_last_line_and_long_lines(sandbox):
    src = "import sys\nsys.stdout.write('a' * 200000)\nsys.stdout.write('\\nno newline at end')\n"
    outcome, lines, _ = sandbox.run(src)
    assert outcome.exit_code == 0
    assert lines[-1] == "no newline at end"
    assert sum(len(line) for line in lines[:-1]) == 200000
    assert max(len(line) for line in lines) <= 64 * 1024


def test_log_cap_keeps_head_and_tail(sandbox):
    src = "for i in range(20000):\n    print(f'line {i:05d} ' + 'x' * 40)\nprint('THE END')\n"
    cap = 64 * 1024
    outcome, lines, _ = sandbox.run(src, log_cap_bytes=cap)
    assert outcome.exit_code == 0
    assert outcome.log_truncated
    data = outcome.log_path.read_bytes()
    assert len(data) <= cap + 1024  # the cap plus two marker lines
    text = data.decode()
    assert text.startswith("line 00000 ")
    assert "[harness] log cap of" in text and "[harness] log truncated:" in text
    assert text.rstrip().endswith("THE END")
    assert lines[-1] == "THE END"  # on_line sees the tail too (the summary block lives there)
    assert len(lines) < 20000


def test_keyboard_interrupt_from_callback_aborts(sandbox):
    def on_line(line):
        if line == "ready":
            raise KeyboardInterrupt

    src = "import time\nprint('ready', flush=True)\ntime.sleep(1000)\n"
    outcome, lines, req = sandbox.run(src, on_line=on_line, hard_timeout_s=30)
    assert outcome.aborted is True
    assert not outcome.timed_out
    assert duration(outcome) < 10
    assert "aborted" in outcome.log_path.read_text()
    assert_no_leftovers(sandbox.client)


def test_keyboard_interrupt_signal_in_main_thread_aborts(sandbox):
    """SIGINT / the caller's SIGTERM handler raise KeyboardInterrupt in the calling thread."""
    started = threading.Event()

    def on_line(line):
        if line == "ready":
            started.set()

    def interrupter():
        if started.wait(20):
            _thread.interrupt_main()

    t = threading.Thread(target=interrupter, daemon=True)
    t.start()
    outcome, _, _ = sandbox.run("import time\nprint('ready', flush=True)\ntime.sleep(1000)\n",
                                on_line=on_line, hard_timeout_s=30)
    t.join(5)
    assert outcome.aborted is True
    assert duration(outcome) < 15
    assert_no_leftovers(sandbox.client)


def test_callback_error_does_not_escape(sandbox):
    def on_line(line):
        raise ValueError("display broke")

    outcome, _, _ = sandbox.run("print('x')\n", on_line=on_line)
    assert outcome.exit_code == 0
    assert "display broke" in outcome.infra_error


def test_missing_image_is_infra_error(sandbox):
    backend = DockerBackend(client=sandbox.client, image="harness-nosuchkind:latest")
    outcome, lines, _ = sandbox.run("print('never')\n", backend=backend)
    assert outcome.infra_error and "not built" in outcome.infra_error
    assert "harness image build nosuchkind" in outcome.infra_error
    assert outcome.exit_code is None and lines == []


def test_missing_data_dir_is_infra_error(sandbox, tmp_path):
    req = sandbox.request("print('never')\n")
    req.data_dir = tmp_path / "no-such-cache"
    outcome = DockerBackend(client=sandbox.client, image=IMAGE).execute(req, lambda line: None)
    assert outcome.infra_error and "harness prepare" in outcome.infra_error


def test_gpu_request_without_toolkit_is_infra_error(sandbox):
    info = sandbox.client.info()
    if "nvidia" in (info.get("Runtimes") or {}):
        pytest.skip("this daemon has the NVIDIA runtime")
    outcome, _, _ = sandbox.run("print('never')\n", gpu_uuids=["GPU-00000000-0000-0000-0000-000000000000"])
    assert outcome.infra_error and "NVIDIA Container Toolkit" in outcome.infra_error


def test_janitor_removes_labelled_leftovers(sandbox):
    req = sandbox.request("import time\ntime.sleep(1000)\n", name="janitor")
    req.run_dir.mkdir(parents=True)
    (req.run_dir / "out").mkdir()
    (req.run_dir / "train.py").write_text("pass\n")
    kwargs = container_spec(req, IMAGE).to_create_kwargs()
    c = sandbox.client.containers.create(**kwargs)
    c.start()
    removed = janitor(sandbox.client, run_id=req.run_id)
    assert removed == [kwargs["name"]]
    assert_no_leftovers(sandbox.client)


def test_stale_container_with_same_name_is_replaced(sandbox):
    """A crashed harness left a container of the same run id: the next run still goes."""
    req = sandbox.request("print('fresh')\n", name="stale")
    req.run_dir.mkdir(parents=True)
    (req.run_dir / "out").mkdir()
    (req.run_dir / "train.py").write_text("pass\n")
    sandbox.client.containers.create(**container_spec(req, IMAGE).to_create_kwargs())
    lines = []
    outcome = DockerBackend(client=sandbox.client, image=IMAGE).execute(req, lines.append)
    assert outcome.exit_code == 0 and lines == ["fresh"]


def test_docker_available(docker_client):
    assert docker_available() is True


def test_unreachable_daemon_is_infra_error(tmp_path):
    """No daemon needed: a client pointed at a socket that does not exist."""
    import docker

    from harness.backends.base import RunRequest
    from harness.benchmarks import load_benchmarks

    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no.sock", version="1.41", timeout=2)
    req = RunRequest(run_id=f"{SESSION_PREFIX}-nodaemon", train_py=tmp_path / "train.py",
                     benchmark=load_benchmarks()["tiny"], data_dir=tmp_path, fixed_dir=tmp_path,
                     run_dir=tmp_path / "run")
    outcome = DockerBackend(client=client, image=IMAGE).execute(req, lambda line: None)
    assert outcome.infra_error and "not reachable" in outcome.infra_error
    assert ".ci/docker-up" in outcome.infra_error
    assert outcome.backend == "docker" and outcome.exit_code is None
    assert outcome.log_path == tmp_path / "run" / "log.txt"



def test_stdout_and_stderr_lines_never_merge(sandbox):
    """Unbuffered print() writes the text and the newline separately; the streams interleave."""
    src = ("import sys\nfor i in range(300):\n"
           "    print(f'out {i:03d}')\n    print(f'err {i:03d}', file=sys.stderr)\n")
    outcome, lines, _ = sandbox.run(src)
    assert outcome.exit_code == 0
    assert sorted(lines) == sorted([f"out {i:03d}" for i in range(300)] + [f"err {i:03d}" for i in range(300)])
    assert [x for x in lines if x.startswith("out")] == [f"out {i:03d}" for i in range(300)]


VIEW = r'''
import json, os
res = {"data": sorted(os.listdir("/data"))}
try:
    open("/data/val/shard_000.bin", "rb")
    res["val"] = "READABLE"
except OSError as e:
    res["val"] = type(e).__name__
res["train"] = len(open("/data/train/shard_000.bin", "rb").read())
print("INFO " + json.dumps(res))
'''


def test_data_entries_hide_the_rest(sandbox):
    """Verified training: only the listed entries of the cache exist in the container."""
    (sandbox.data_dir / "tokenizer").mkdir()
    req = sandbox.request(VIEW, name="view")
    req.data_entries = ["manifest.json", "tokenizer", "train"]
    lines = []
    outcome = DockerBackend(client=sandbox.client, image=IMAGE).execute(req, lines.append)
    assert outcome.exit_code == 0, lines
    info = info_line(lines)
    assert info["data"] == ["manifest.json", "tokenizer", "train"]
    assert info["val"] == "FileNotFoundError"
    assert info["train"] == 4096


def test_missing_data_entry_is_infra_error(sandbox):
    req = sandbox.request("pass\n", name="noentry")
    req.data_entries = ["manifest.json", "tokenizer"]  # the sandbox cache has no tokenizer/
    outcome = DockerBackend(client=sandbox.client, image=IMAGE).execute(req, lambda line: None)
    assert outcome.infra_error and "'tokenizer'" in outcome.infra_error


EVALUATOR = r'''
import json, os, sys
program, out = sys.argv[1], sys.argv[2]
res = {"program": open(program).read(), "train_py": os.path.exists("/work/train.py")}
try:
    open(program, "a").write("x")
    res["export_writable"] = True
except OSError:
    res["export_writable"] = False
json.dump(res, open(out, "w"))
print("INFO " + json.dumps(res))
'''


def test_evaluator_style_request(sandbox, tmp_path):
    """No candidate, an extra read-only mount, {placeholders} filled with container paths."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.txt").write_text("the model")
    (sandbox.fixed_dir / "evaluate.py").write_text(EVALUATOR)
    req = sandbox.request("raise SystemExit('must not run')\n", name="eval",
                          command=["{python}", "{fixed}/evaluate.py", "{export}/model.txt", "{out}/eval.json"])
    req.extra_mounts = {"export": export}
    req.mount_train_py = False
    lines = []
    outcome = DockerBackend(client=sandbox.client, image=IMAGE).execute(req, lines.append)
    assert outcome.exit_code == 0, lines
    info = info_line(lines)
    assert info == {"program": "the model", "train_py": False, "export_writable": False}
    assert json.loads((req.run_dir / "out" / "eval.json").read_text()) == info
    assert (export / "model.txt").read_text() == "the model"


# --- runtimes --------------------------------------------------------------------------------------


def test_unknown_runtime_is_infra_error_never_runc(sandbox):
    backend = DockerBackend(client=sandbox.client, image=IMAGE, runtime="nosuch-runtime")
    outcome, lines, req = sandbox.run("print('never')\n", backend=backend)
    assert outcome.infra_error and "'nosuch-runtime' is not registered" in outcome.infra_error
    assert ".ci/docker-up" in outcome.infra_error and "no fall-back" in outcome.infra_error
    assert outcome.exit_code is None and lines == []
    assert sandbox.client.containers.list(all=True, filters={"label": f"harness.run_id={req.run_id}"}) == []


UNAME = "import os\nprint('UNAME ' + os.uname().release)\n"


@pytest.mark.parametrize("sandbox", ["runsc"], indirect=True)
def test_runsc_runs_in_gvisor_and_is_recorded(sandbox):
    outcome, lines, _ = sandbox.run(UNAME)
    assert outcome.exit_code == 0 and outcome.infra_error is None, lines
    assert outcome.runtime == "runsc"
    assert outcome.runtime_version.startswith("runsc version ")
    # gVisor's own kernel answers, not the host's
    assert lines == [f"UNAME {lines[0][6:]}"] and lines[0][6:] != os.uname().release


# --- the end of a run ------------------------------------------------------------------------------


def test_missing_command_exits_127(sandbox):
    outcome, lines, _ = sandbox.run("pass\n", command=["no-such-program", "x"])
    assert outcome.exit_code == 127 and outcome.infra_error is None
    assert any("no-such-program" in line for line in lines)


def test_cancel_ends_the_run_and_keeps_its_out(sandbox):
    src = "import time\nopen('/out/partial.txt', 'w').write('so far')\nprint('ready', flush=True)\ntime.sleep(100)\n"
    req = sandbox.request(src, hard_timeout_s=60)
    req.cancel = threading.Event()
    lines = []

    def on_line(line):
        lines.append(line)
        if line == "ready":
            req.cancel.set()

    outcome = sandbox.backend().execute(req, on_line)
    assert outcome.kill_reason == "cancelled" and not outcome.timed_out
    assert outcome.exit_code == 137 and outcome.infra_error is None
    assert duration(outcome) < 10
    assert (req.run_dir / "out" / "partial.txt").read_text() == "so far"  # copied out after the kill
    assert_no_leftovers(sandbox.client)


def test_two_runs_at_once_through_one_backend(sandbox):
    """The verified scorer and its model server share one DockerBackend from two threads."""
    backend = sandbox.backend()
    src = ("import sys, time\nopen('/out/who', 'w').write(sys.argv[1])\ntime.sleep(1)\n"
           "print('I am', sys.argv[1])\nsys.exit(int(sys.argv[1]))\n")
    reqs = [sandbox.request(src, name=f"twin{i}", command=["python3", "/work/train.py", str(i + 3)]) for i in range(2)]
    results: dict[int, tuple] = {}

    def go(i):
        lines = []
        results[i] = (backend.execute(reqs[i], lines.append), lines)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.time() - t0 < 15
    for i in range(2):
        outcome, lines = results[i]
        assert outcome.exit_code == i + 3 and outcome.infra_error is None
        assert lines == [f"I am {i + 3}"]
        assert (reqs[i].run_dir / "out" / "who").read_text() == str(i + 3)
    assert_no_leftovers(sandbox.client)


# --- the keeper's line and the copy of /out (no daemon needed) --------------------------------------


def test_keeper_line_is_taken_out_of_the_stream():
    token = "ab" * 16
    line = KeeperLine(token)
    out = line.feed(b"progress 1\nno newline yet")
    assert out == b"progress 1\nno newline yet" and line.result is None
    # split anywhere: the tail that could start the line is held back, then dropped
    whole = b"\x1e" + token.encode() + b" exit=3 reason=exit full=1\n"
    assert line.feed(whole[:5]) == b""
    assert line.feed(whole[5:20]) == b""
    assert line.result is None
    assert line.feed(whole[20:]) == b""
    assert line.result == (3, "exit", True)
    # a wrong token is plain output; a lone record separator is held only while it could be the start
    other = KeeperLine(token)
    fake = b"\x1e" + b"0" * 32 + b" exit=0 reason=exit full=0\n"
    assert other.feed(fake) == fake and other.result is None
    assert other.feed(b"x\x1e") == b"x" and other.flush() == b"\x1e"


def _tar(entries) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "sparse":  # a header that claims a huge file (a sparse file on a tmpfs)
                info.size = data
                return io.BytesIO(buf.getvalue() + info.tobuf() + b"\0" * (1 << 20))
            else:
                info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                             "chardev": tarfile.CHRTYPE}[kind]
                info.linkname = data
                tf.addfile(info)
    buf.seek(0)
    return buf


def test_extract_output_writes_only_plain_files_and_dirs(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "planted").symlink_to(secret)  # left from before: replaced, never written through
    stream = _tar([
        (".", "dir", None),
        ("./model.pt2", "file", b"weights"),
        ("./sub", "dir", None),
        ("./sub/export.json", "file", b"{}"),
        ("./link", "symlink", str(secret)),
        ("./hard", "hardlink", "model.pt2"),
        ("./fifo", "fifo", ""),
        ("./tty", "chardev", ""),
        ("../escape.txt", "file", b"x"),
        ("/abs.txt", "file", b"x"),
        ("./sub/../../up.txt", "file", b"x"),
        ("./planted", "file", b"overwritten"),
    ])
    rep = extract_output(stream, dest, cap=1 << 20, max_entries=100)
    assert sorted(p.name for p in dest.rglob("*")) == ["export.json", "model.pt2", "planted", "sub"]
    assert (dest / "model.pt2").read_bytes() == b"weights"
    assert (dest / "sub" / "export.json").read_bytes() == b"{}"
    assert secret.read_text() == "host secret"  # the planted link was not written through
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "up.txt").exists()
    assert rep.files == 2 and rep.bytes == len(b"weights") + 2
    assert rep.skipped == 8 and rep.over is None
    (dest / "planted").unlink()
    for p in dest.rglob("*"):
        assert p.stat().st_uid == os.getuid()
        assert (p.stat().st_mode & 0o7777) in (0o644, 0o755)


def test_extract_output_stops_at_the_caps(tmp_path):
    many = [(f"./f{i}", "file", b"") for i in range(50)]
    rep = extract_output(_tar(many), tmp_path / "a", cap=1 << 20, max_entries=16)
    assert rep.over and "entries" in rep.over and len(os.listdir(tmp_path / "a")) == 16
    big = [("./a", "file", b"x" * 1000), ("./b", "file", b"y" * 1000)]
    rep = extract_output(_tar(big), tmp_path / "b", cap=1500, max_entries=16)
    assert rep.over and "bytes" in rep.over and os.listdir(tmp_path / "b") == ["a"]
    sparse = [("./hole", "sparse", 10 << 30)]  # claims 10 GiB
    rep = extract_output(_tar(sparse), tmp_path / "c", cap=1 << 20, max_entries=16)
    assert rep.over and os.listdir(tmp_path / "c") == [] and rep.bytes == 0


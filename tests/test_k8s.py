"""The k8s backend without a cluster: its manifests read through the official client's own models, and its
execute() against a small stand-in for the three API classes (no API server can run where the tests do).

The manifests of each case are deserialized with the client's deserializer (ApiClient.deserialize, as the
client does with a server's answer) into V1Job / V1NetworkPolicy / V1ConfigMap, every isolation property is
asserted on those models, and the YAML is compared with tests/golden/k8s/<case>.yaml
(UPDATE_GOLDEN=1 rewrites the files).
"""

from __future__ import annotations

import base64
import copy
import difflib
import io
import json
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from harness.backends.base import RunRequest
from harness.backends.docker.keeper import KEEPER_SOURCE, KEEPER_TOKEN_ENV
from harness.backends.k8s.backend import K8sBackend
from harness.backends.k8s.manifests import (CONFIGMAP_MAX_BYTES, CandidateTooLarge, K8sOptions, K8sUnsupported,
                                            ManifestError, dns_name, label_value, parse_volume_maps, run_manifests,
                                            to_model)
from harness.benchmarks import Benchmark, Limits
from harness.hw.context import HardwareError

GOLDEN = Path(__file__).parent / "golden" / "k8s"
TOKEN = "0123456789abcdef0123456789abcdef"
RUN_ID = "20250101-120000-a1b2c3"
CANDIDATE = b"import prepare\nprint('training')\n"
MAPS = "/srv/harness/cache=pvc:harness-cache/v1;/srv/harness/repo=pvc:harness-repo;/srv/harness/runs=hostpath:/srv/harness/runs"


def bench(**limits) -> Benchmark:
    lim = dict(memory="6g", shm="1g", pids=512, tmpfs="256m", output="256m", cpus=2.0)
    lim.update(limits)
    return Benchmark(name="tiny", description="a tiny benchmark", data={}, vocab_size=256, seq_len=64,
                     eval_tokens=4096, time_budget_s=60.0, hard_timeout_s=240.0, model_hint={"depth": 2},
                     allowed_imports=("torch",), limits=Limits(**lim))


def request(root: str = "/srv/harness", run_id: str = RUN_ID, **kw) -> RunRequest:
    run_dir = Path(root) / "runs" / run_id
    fields = dict(
        run_id=run_id, train_py=run_dir / "train.py", benchmark=bench(), data_dir=Path(root) / "cache" / "tiny",
        fixed_dir=Path(root) / "repo" / "fixed", run_dir=run_dir, hard_timeout_s=240.0,
        env={"HARNESS_BENCHMARK": "tiny", "HARNESS_DATA_DIR": f"{root}/cache/tiny", "HARNESS_OUT_DIR": str(run_dir / "out"),
             "HARNESS_SEED": "7", "HARNESS_TIME_BUDGET": "60.0", "PATH": "/home/me/.venv/bin:/usr/bin",
             "CUDA_VISIBLE_DEVICES": "3", "LD_PRELOAD": "/home/me/evil.so"})
    fields.update(kw)
    return RunRequest(**fields)


def options(**kw) -> K8sOptions:
    return K8sOptions(**{"image": "harness-cpu:latest", "volumes": parse_volume_maps(MAPS), **kw})


def eval_request() -> RunRequest:
    """A verified evaluation's model server: no candidate, no data, the export and the socket folder read-only."""
    train_dir = Path("/srv/harness/runs") / RUN_ID
    return request(run_id=f"{RUN_ID}-model-a", run_dir=train_dir / "eval" / "model-a", data_entries=[],
                   mount_train_py=False, env={"HARNESS_OUT_DIR": str(train_dir / "eval" / "model-a" / "out")},
                   command=["{python}", "-I", "{fixed}/serve.py", "--model", "{export}/model.pt2", "--socket",
                            "{sock}/model.sock"],
                   extra_mounts={"export": train_dir / "out", "sock": train_dir / "eval" / "sock"},
                   gpu_uuids=["GPU-00000000-1111-2222-3333-444444444444"])


CASES = {
    "cpu": lambda: (request(), options()),
    "gpu": lambda: (request(gpu_uuids=["GPU-00000000-1111-2222-3333-444444444444"]),
                    options(image="harness-cuda:latest", runtime_class_name="nvidia", image_pull_policy="Never")),
    "verified-eval": lambda: (eval_request(), options(image="harness-cuda:latest", runtime_class_name="nvidia",
                                                      socket_node="harness-node-1")),
    "data-entries": lambda: (request(data_entries=["manifest.json", "tokenizer"]), options()),
}


def as_model(obj: dict, type_name: str):
    """The client's own deserializer, as the client reads a server's answer."""
    return ApiClient(Configuration()).deserialize(json.dumps(obj), type_name, "application/json")


def deserialize(obj: dict, type_name: str):
    """as_model, then back: nothing may be lost on the round trip."""
    model = as_model(obj, type_name)
    assert ApiClient(Configuration()).sanitize_for_serialization(model) == obj, f"{type_name} lost fields"
    return model


def build(case: str):
    req, opts = CASES[case]()
    m = run_manifests(req, opts, train_py=None if not req.mount_train_py else CANDIDATE, keeper_token=TOKEN)
    job = deserialize(m.job, "V1Job")
    policy = deserialize(m.network_policy, "V1NetworkPolicy")
    cm = deserialize(m.config_map, "V1ConfigMap") if m.config_map is not None else None
    return req, opts, m, job, policy, cm


def golden_text(m) -> str:
    """The case's objects as YAML; the keeper's program (another module's) stands as a placeholder."""
    docs = json.loads(json.dumps({"job": m.job, "network_policy": m.network_policy, "config_map": m.config_map}))
    command = docs["job"]["spec"]["template"]["spec"]["containers"][0]["command"]
    command[command.index(KEEPER_SOURCE)] = "<KEEPER_SOURCE: harness/backends/docker/keeper.py>"
    return yaml.safe_dump(docs, sort_keys=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_match_the_golden_files(case):
    *_, m, _job, _policy, _cm = build(case)
    text = golden_text(m)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    want = path.read_text() if path.exists() else ""
    diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(path), "built"))
    assert not diff, f"manifests differ from {path} (UPDATE_GOLDEN=1 rewrites it):\n{diff}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_isolation_property_holds_on_the_models(case):
    req, opts, m, job, policy, cm = build(case)
    spec = job.spec
    assert spec.backoff_limit == 0 and spec.ttl_seconds_after_finished == 600
    assert spec.active_deadline_seconds == int(req.hard_timeout_s) + 2 + 300  # keeper margin + 300 s
    for meta in (job.metadata, policy.metadata, *([cm.metadata] if cm else [])):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta.name) and len(meta.name) <= 63
    pod = spec.template.spec
    labels = spec.template.metadata.labels
    assert labels == {"app.kubernetes.io/name": "harness", "harness/run-id": label_value(req.run_id),
                      "harness/benchmark": "tiny"}
    assert pod.restart_policy == "Never"
    assert pod.automount_service_account_token is False and pod.enable_service_links is False
    assert pod.host_network is False and pod.host_pid is False and pod.host_ipc is False
    assert pod.share_process_namespace is False
    sc = pod.security_context
    assert sc.run_as_non_root is True and sc.run_as_user == 1000 and sc.run_as_group == 1000 and sc.fs_group == 1000
    assert sc.seccomp_profile.type == "RuntimeDefault"
    assert pod.runtime_class_name == opts.runtime_class_name
    assert [c.name for c in pod.containers] == ["run", "collect"]
    for c in pod.containers:
        csc = c.security_context
        assert csc.read_only_root_filesystem is True and csc.allow_privilege_escalation is False
        assert csc.privileged is False and csc.capabilities.drop == ["ALL"] and not csc.capabilities.add
        assert csc.run_as_non_root is True and csc.run_as_user == 1000
        assert c.image == opts.image and c.image_pull_policy == opts.image_pull_policy
    run, collect = pod.containers
    limits = run.resources.limits
    assert limits["memory"] == str(6 << 30) and limits["cpu"] == "2"
    assert run.resources.requests == limits
    assert limits.get("nvidia.com/gpu") == ("1" if req.gpu_uuids else None)
    env = {e.name: e.value for e in run.env}
    assert env["HARNESS_DATA_DIR"] == "/data" and env["HARNESS_OUT_DIR"] == "/out" and env["PYTHONPATH"] == "/fixed"
    assert env[KEEPER_TOKEN_ENV] == TOKEN
    for host_only in ("PATH", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD"):
        assert host_only not in env
    assert run.command[:5] == ["python3", "-I", "-S", "-c", KEEPER_SOURCE]  # the keeper is PID 1
    volumes = {v.name: v for v in pod.volumes}
    mounts = {mt.mount_path: mt for mt in run.volume_mounts}
    for target, size in (("/out", 256 << 20), ("/tmp", 256 << 20), ("/dev/shm", 1 << 30)):
        vol = volumes[mounts[target].name].empty_dir
        assert vol.medium == "Memory" and vol.size_limit == str(size) and mounts[target].read_only is False
    assert [(mt.mount_path, mt.read_only) for mt in collect.volume_mounts] == [("/out", True)]
    assert mounts["/fixed"].read_only is True
    writable = {t for t, mt in mounts.items() if not mt.read_only}
    assert writable == {"/out", "/tmp", "/dev/shm"} | {f"/mnt/{n}" for n in req.rw_mounts}
    for mt in mounts.values():  # a claim is read-only at its source too wherever the mount is
        claim = volumes[mt.name].persistent_volume_claim
        if claim is not None and mt.read_only:
            assert claim.read_only is True
    data = sorted(t for t in mounts if t.startswith("/data"))
    if req.data_entries is None:
        assert data == ["/data"]
    else:
        assert data == sorted(f"/data/{e}" for e in req.data_entries)
        for e in req.data_entries:
            assert mounts[f"/data/{e}"].sub_path.endswith(f"tiny/{e}")
    for name in req.extra_mounts:
        assert mounts[f"/mnt/{name}"].read_only is True
    if req.mount_train_py:
        assert mounts["/work/train.py"].read_only is True and mounts["/work/train.py"].sub_path == "train.py"
        assert volumes["train-py"].config_map.name == cm.metadata.name and cm.immutable is True
        assert base64.b64decode(cm.binary_data["train.py"]) == CANDIDATE
    else:
        assert cm is None and "/work/train.py" not in mounts
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    assert policy.spec.pod_selector.match_labels == {"harness/run-id": labels["harness/run-id"]}
    assert not policy.spec.ingress and not policy.spec.egress  # no rule: nothing in, nothing out
    assert job.metadata.namespace == policy.metadata.namespace == opts.namespace


def test_a_verified_evaluation_gets_its_command_its_mounts_and_is_pinned_to_the_sockets_node():
    req, _opts, _m, job, _policy, _cm = build("verified-eval")
    pod = job.spec.template.spec
    assert pod.node_selector == {"kubernetes.io/hostname": "harness-node-1"}
    run = pod.containers[0]
    assert run.command[run.command.index("--") + 1:] == ["python3", "-I", "/fixed/serve.py", "--model",
                                                         "/mnt/export/model.pt2", "--socket", "/mnt/sock/model.sock"]
    volumes = {v.name: v for v in pod.volumes}
    mounts = {mt.mount_path: mt for mt in run.volume_mounts}
    assert not any(t.startswith("/data") for t in mounts) and "data" not in volumes
    assert volumes[mounts["/mnt/sock"].name].host_path.path == "/srv/harness/runs"
    assert mounts["/mnt/sock"].sub_path == f"{RUN_ID}/eval/sock"


def test_a_socket_mount_is_refused_unless_the_pod_runs_on_this_machines_node():
    req = request(extra_mounts={"feed": Path("/srv/harness/runs") / RUN_ID / "feed"})
    with pytest.raises(K8sUnsupported, match=r"'feed' mount .*Unix socket.*socket_node"):
        run_manifests(req, options(), train_py=CANDIDATE)
    with pytest.raises(K8sUnsupported, match="Unix socket"):  # a claim (even ReadWriteMany) cannot carry it
        run_manifests(req, options(socket_node="n1", volumes=parse_volume_maps("/srv/harness=pvc:shared")),
                      train_py=CANDIDATE)
    m = run_manifests(req, options(socket_node="n1"), train_py=CANDIDATE)
    assert m.job["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "n1"}


def test_a_folder_no_volume_map_holds_is_refused_by_name():
    with pytest.raises(K8sUnsupported, match=r"the data cache \(/elsewhere/tiny\): no volume map holds it"):
        run_manifests(request(data_dir=Path("/elsewhere/tiny")), options(), train_py=CANDIDATE)


def test_a_misspelled_field_is_caught_by_the_round_trip():
    _req, _opts, m, *_ = build("cpu")
    job = copy.deepcopy(m.job)
    sc = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    sc["readOnlyRootFileSystem"] = sc.pop("readOnlyRootFilesystem")  # one wrong capital
    model = ApiClient(Configuration()).deserialize(json.dumps(job), "V1Job", "application/json")
    assert model.spec.template.spec.containers[0].security_context.read_only_root_filesystem is None  # silently lost
    with pytest.raises(ManifestError, match=r"containers\[0\]\.securityContext\.readOnlyRootFileSystem: lost"):
        to_model(job)
    to_model(m.job)  # the real one passes


def test_a_too_large_train_py_is_a_clear_error_naming_the_file():
    req = request()
    with pytest.raises(CandidateTooLarge, match=rf"candidate {req.train_py} is {CONFIGMAP_MAX_BYTES} bytes: .*ConfigMap"):
        run_manifests(req, options(), train_py=b"#" * CONFIGMAP_MAX_BYTES)
    run_manifests(req, options(), train_py=b"#" * (CONFIGMAP_MAX_BYTES - len("train.py")))


def test_names_are_valid_and_distinct():
    long_id = "Run_ID with spaces/" + "x" * 80
    name = dns_name("harness", long_id)
    assert len(name) <= 63 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()
    assert dns_name("harness", long_id + "y") != name
    value = label_value(long_id)
    assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
    assert dns_name("harness", RUN_ID) == f"harness-{RUN_ID}" and label_value(RUN_ID) == RUN_ID


# -- execute() against a stand-in for the three API classes -----------------------------------------------------


def _keeper(code: int, reason: str = "exit", full: int = 0) -> tuple:
    return ("keeper", code, reason, full)


class FakeCluster:
    """Plays BatchV1Api, CoreV1Api and NetworkingV1Api for one run: the objects it is given, a pod whose run
    container goes through `states` (one per look; the last repeats), a log, and /out as a tar stream."""

    def __init__(self, states, log=(), out_files=None, fail=None):
        self.batch = self.core = self.networking = self
        self.states, self.log, self.out_files, self.fail = list(states), list(log), out_files or {}, fail or {}
        self.objects: dict[tuple[str, str], object] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.looks = 0

    def _call(self, verb, kind, name):
        self.calls.append((verb, kind, name))
        err = self.fail.get((verb, kind))
        if err is not None:
            raise err

    def _create(self, kind, body):
        assert type(body).__name__ == f"V1{kind}"  # the client's models, not dicts
        self._call("create", kind, body.metadata.name)
        self.objects[(kind, body.metadata.name)] = body

    def _delete(self, kind, name):
        self._call("delete", kind, name)
        if self.objects.pop((kind, name), None) is None:
            raise ApiException(status=404, reason="Not Found")

    def create_namespaced_network_policy(self, namespace, body, field_validation=None):
        self._create("NetworkPolicy", body)

    def create_namespaced_config_map(self, namespace, body, field_validation=None):
        self._create("ConfigMap", body)

    def create_namespaced_job(self, namespace, body, field_validation=None):
        assert field_validation == "Strict"
        self._create("Job", body)

    def delete_namespaced_network_policy(self, name, namespace):
        self._delete("NetworkPolicy", name)

    def delete_namespaced_config_map(self, name, namespace):
        self._delete("ConfigMap", name)

    def delete_namespaced_job(self, name, namespace, propagation_policy=None):
        assert propagation_policy == "Background"
        self._delete("Job", name)

    def job(self):
        return next((v for (k, _), v in self.objects.items() if k == "Job"), None)

    def read_namespaced_job(self, name, namespace):
        return self.job()

    def list_namespaced_pod(self, namespace, label_selector):
        self._call("list", "Pod", label_selector)
        job = self.job()
        if job is None or not self.states:
            return as_model({"items": []}, "V1PodList")
        state = self.states[min(self.looks, len(self.states) - 1)]
        self.looks += 1
        statuses = [{"name": "run", "image": "harness-cpu:latest", "imageID": "sha256:feed", "ready": False,
                     "restartCount": 0, "state": state},
                    {"name": "collect", "image": "harness-cpu:latest", "imageID": "sha256:feed", "ready": True,
                     "restartCount": 0, "state": {"running": {"startedAt": "2025-01-01T12:00:00Z"}}}]
        pod = {"metadata": {"name": "pod-1", "labels": job.spec.template.metadata.labels},
               "spec": {"nodeName": "node-a", "containers": [{"name": "run"}, {"name": "collect"}]},
               "status": {"phase": "Running", "containerStatuses": statuses}}
        return as_model({"items": [pod]}, "V1PodList")  # times come back as datetimes, as from a server

    def read_namespaced_pod_log(self, name, namespace, container, follow, _preload_content):
        token = next(e.value for e in self.job().spec.template.spec.containers[0].env if e.name == KEEPER_TOKEN_ENV)
        data = b"".join(b"\x1e%s exit=%d reason=%s full=%d\n" % (token.encode(), part[1], part[2].encode(), part[3])
                        if isinstance(part, tuple) else part for part in self.log)
        chunks = [data[i:i + 7] for i in range(0, len(data), 7)]  # split anywhere, the keeper's line too
        return type("Resp", (), {"stream": lambda self, amt=None, decode_content=None: iter(chunks)})()

    def exec_stream(self, pod, namespace, container, command):
        assert (pod, container) == ("pod-1", "collect") and command[0] == "sh"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, content in self.out_files.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
        yield (None, b"4096 65536 60000 65536 65000\n")
        yield (buf.getvalue(), None)


RUNNING = {"running": {"startedAt": "2025-01-01T12:00:00Z"}}
PENDING = {"waiting": {"reason": "ContainerCreating"}}


def ended(code: int, reason: str = "Error") -> dict:
    return {"terminated": {"exitCode": code, "reason": reason, "startedAt": "2025-01-01T12:00:00Z",
                           "finishedAt": "2025-01-01T12:00:09Z"}}


def run(tmp_path: Path, cluster: FakeCluster, **kw):
    req = request(root=str(tmp_path), **kw)
    req.run_dir.mkdir(parents=True)
    req.train_py.write_bytes(CANDIDATE)
    backend = K8sBackend(image="harness-cpu:latest", namespace="harness", api=cluster, socket_node=None,
                         volumes=f"{tmp_path}=pvc:harness-all", poll_s=0.01, stop_grace_s=0.05, cleanup_wait_s=1.0)
    lines: list[str] = []
    return backend.execute(req, lines.append), lines, req


def assert_all_deleted(cluster: FakeCluster):
    assert cluster.objects == {}
    deleted = [kind for verb, kind, _ in cluster.calls if verb == "delete"]
    assert deleted == ["Job", "ConfigMap", "NetworkPolicy"]  # the policy outlives the pod


def test_execute_creates_streams_collects_and_deletes(tmp_path):
    cluster = FakeCluster([PENDING, RUNNING, RUNNING, ended(0, "Completed")],
                          log=[b"step 1 loss 3.0\n", b"step 2 loss 2.5\nno newline", _keeper(0), _keeper(0)],
                          out_files={"result.txt": b"42\n"})
    outcome, lines, req = run(tmp_path, cluster)
    assert [c[:2] for c in cluster.calls if c[0] == "create"] == [("create", "NetworkPolicy"), ("create", "ConfigMap"),
                                                                  ("create", "Job")]
    assert outcome.infra_error is None, outcome.infra_error
    assert (outcome.backend, outcome.isolated, outcome.exit_code, outcome.oom_killed) == ("k8s", True, 0, False)
    assert outcome.node == "node-a" and outcome.job_id == f"harness/harness-{RUN_ID}"
    assert outcome.image == "sha256:feed" and outcome.kill_reason is None and not outcome.timed_out
    assert lines[:3] == ["step 1 loss 3.0", "step 2 loss 2.5", "no newline"]  # the keeper's lines taken out
    assert "\x1e" not in req.run_dir.joinpath("log.txt").read_text()
    assert (req.run_dir / "out" / "result.txt").read_bytes() == b"42\n" and outcome.output_bytes == 3
    assert_all_deleted(cluster)


def test_execute_maps_an_exit_code_and_an_oom_kill(tmp_path):
    outcome, _, _ = run(tmp_path / "a", FakeCluster([RUNNING, ended(3)], log=[b"boom\n", _keeper(3)]))
    assert (outcome.exit_code, outcome.oom_killed, outcome.infra_error) == (3, False, None)
    cluster = FakeCluster([RUNNING, ended(137, "OOMKilled")], log=[b"allocating\n"])
    outcome, lines, _ = run(tmp_path / "b", cluster)
    assert (outcome.exit_code, outcome.oom_killed, outcome.infra_error) == (137, True, None)
    assert any("more memory than limits.memory" in line for line in lines)
    assert_all_deleted(cluster)


def test_the_keepers_deadline_is_a_timeout(tmp_path):
    outcome, _, _ = run(tmp_path, FakeCluster([RUNNING, ended(137)], log=[_keeper(137, "deadline")]))
    assert outcome.timed_out and outcome.kill_reason == "timeout" and outcome.exit_code == 137


def test_the_hard_timeout_deletes_a_job_that_does_not_end(tmp_path):
    cluster = FakeCluster([RUNNING])
    outcome, lines, _ = run(tmp_path, cluster, hard_timeout_s=0.05)
    assert outcome.timed_out and outcome.kill_reason == "timeout" and outcome.exit_code is None
    assert any("hard timeout of 0.05s" in line for line in lines) and any("is deleted" in line for line in lines)
    assert cluster.objects == {}


def test_cancel_deletes_the_job(tmp_path):
    cancel = threading.Event()
    cancel.set()
    cluster = FakeCluster([RUNNING])
    outcome, _, _ = run(tmp_path, cluster, cancel=cancel)
    assert outcome.kill_reason == "cancelled" and cluster.objects == {}


def test_an_image_that_cannot_be_pulled_is_an_infra_error(tmp_path):
    cluster = FakeCluster([{"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}])
    outcome, _, _ = run(tmp_path, cluster)
    assert "ErrImageNeverPull" in outcome.infra_error and "kind load docker-image" in outcome.infra_error
    assert_all_deleted(cluster)


def test_everything_is_deleted_after_an_exception(tmp_path):
    cluster = FakeCluster([RUNNING], fail={("list", "Pod"): RuntimeError("connection reset")})
    outcome, _, _ = run(tmp_path / "a", cluster)
    assert "internal error in the k8s backend" in outcome.infra_error and "connection reset" in outcome.infra_error
    assert_all_deleted(cluster)
    cluster = FakeCluster([RUNNING], fail={("create", "Job"): ApiException(status=403, reason="Forbidden")})
    outcome, _, _ = run(tmp_path / "b", cluster)
    assert "403 Forbidden" in outcome.infra_error
    assert cluster.objects == {} and [c[1] for c in cluster.calls if c[0] == "delete"] == [
        "Job", "ConfigMap", "NetworkPolicy"]  # the Job's 404 is no error


def test_an_unsupported_request_never_reaches_the_cluster(tmp_path):
    cluster = FakeCluster([RUNNING])
    outcome, _, _ = run(tmp_path / "a", cluster, extra_mounts={"feed": tmp_path / "a" / "feed"})
    assert "Unix socket" in outcome.infra_error and cluster.calls == []
    req = request(root=str(tmp_path / "b"))
    req.run_dir.mkdir(parents=True)
    req.train_py.write_bytes(b"#" * (CONFIGMAP_MAX_BYTES + 1))
    backend = K8sBackend(volumes=f"{tmp_path}=pvc:c", api=cluster)
    outcome = backend.execute(req, lambda line: None)
    assert f"candidate {req.train_py} is" in outcome.infra_error and cluster.calls == []


def test_no_kube_config_is_an_infra_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "no-such-kubeconfig"
    backend = K8sBackend(volumes=f"{tmp_path}=pvc:c", kubeconfig=str(missing))  # making it needs no cluster
    req = request(root=str(tmp_path))
    req.run_dir.mkdir(parents=True)
    req.train_py.write_bytes(CANDIDATE)
    outcome = backend.execute(req, lambda line: None)
    assert outcome.infra_error.startswith("no Kubernetes configuration") and str(missing) in outcome.infra_error
    assert outcome.backend == "k8s" and outcome.exit_code is None
    assert "no Kubernetes configuration" in (req.run_dir / "log.txt").read_text()


def test_the_hardware_cannot_be_probed_from_here():
    backend = K8sBackend(volumes="")
    with pytest.raises(HardwareError, match="probing inside the pod is not implemented"):
        backend.probe_hardware()
    assert backend.start_telemetry(None, Path("/nonexistent"))[0] is None


# -- the real client's classes (URLs, query parameters, the exec websocket) against a stub API server -----------


def _ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:  # a server's frame: unmasked
    n = len(payload)
    size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big") if n < 65536 else bytes([127]) + n.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + payload


def _stub_api_server(out_tar: bytes):
    """An HTTP server answering the few requests a run makes, as an API server would; exec is a websocket
    speaking the v4 channel protocol (1 stdout, 2 stderr, 3 status). Records (method, path, kind)."""
    import base64 as b64
    import hashlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str, str | None]] = []
    job: dict = {}
    status = {"name": "run", "image": "i", "imageID": "sha256:real", "ready": False, "restartCount": 0,
              "state": {"terminated": {"exitCode": 4, "reason": "Error", "startedAt": "2025-01-01T00:00:00Z",
                                       "finishedAt": "2025-01-01T00:00:05Z"}}}
    collect = {"name": "collect", "image": "i", "imageID": "sha256:real", "ready": True, "restartCount": 0,
               "state": {"running": {}}}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, obj, ctype: str = "application/json"):
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            seen.append(("POST", self.path, body.get("kind")))
            if body.get("kind") == "Job":
                job.update(body)
            self._send(201, body)

        def do_DELETE(self):
            seen.append(("DELETE", self.path, None))
            if "/jobs/" in self.path:
                job.clear()
            self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        def do_GET(self):
            seen.append(("GET", self.path, None))
            if "/exec" in self.path:
                key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                self.send_response(101)
                for name, value in (("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                    ("Sec-WebSocket-Accept", b64.b64encode(hashlib.sha1(key.encode()).digest()).decode()),
                                    ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(_ws_frame(b"\x024096 65536 60000 65536 65000\n"))
                for i in range(0, len(out_tar), 50000):
                    self.wfile.write(_ws_frame(b"\x01" + out_tar[i:i + 50000]))
                self.wfile.write(_ws_frame(b'\x03{"metadata":{},"status":"Success"}') + _ws_frame(b"\x03\xe8", 0x8))
                self.close_connection = True
                return
            if "/log" in self.path:
                return self._send(200, b"hello from the pod\n", "text/plain")
            items = [] if not job else [{
                "metadata": {"name": "p1", "labels": job["spec"]["template"]["metadata"]["labels"]},
                "spec": {"nodeName": "node-b", "containers": [{"name": "run"}, {"name": "collect"}]},
                "status": {"phase": "Running", "containerStatuses": [status, collect]}}]
            self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, seen


def test_execute_through_the_real_client_against_a_stub_api_server(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    model = bytes(range(256)) * 1000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, content in (("model.pt2", model), ("sub/export.json", b"{}")):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    server, seen = _stub_api_server(buf.getvalue())
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "s", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}]}))
        req = request(root=str(tmp_path))
        req.run_dir.mkdir(parents=True)
        req.train_py.write_bytes(CANDIDATE)
        backend = K8sBackend(volumes=f"{tmp_path}=pvc:c", kubeconfig=str(kubeconfig), poll_s=0.01, cleanup_wait_s=0.2)
        lines: list[str] = []
        outcome = backend.execute(req, lines.append)
    finally:
        server.shutdown()
    assert outcome.infra_error is None, outcome.infra_error
    assert (outcome.exit_code, outcome.node, outcome.image, lines) == (4, "node-b", "sha256:real", ["hello from the pod"])
    assert (req.run_dir / "out" / "model.pt2").read_bytes() == model and outcome.output_bytes == len(model) + 2
    job = f"harness-{RUN_ID}"
    assert [s for s in seen if s[0] != "GET" or "/pods?" not in s[1]] == [
        ("POST", "/apis/networking.k8s.io/v1/namespaces/harness/networkpolicies?fieldValidation=Strict", "NetworkPolicy"),
        ("POST", "/api/v1/namespaces/harness/configmaps?fieldValidation=Strict", "ConfigMap"),
        ("POST", "/apis/batch/v1/namespaces/harness/jobs?fieldValidation=Strict", "Job"),
        ("GET", "/api/v1/namespaces/harness/pods/p1/log?container=run&follow=true", None),
        *[s for s in seen if "/exec?" in s[1]],
        ("DELETE", f"/apis/batch/v1/namespaces/harness/jobs/{job}?propagationPolicy=Background", None),
        ("DELETE", f"/api/v1/namespaces/harness/configmaps/{job}-train-py", None),
        ("DELETE", f"/apis/networking.k8s.io/v1/namespaces/harness/networkpolicies/{job}-isolate", None)]
    exec_path = next(s[1] for s in seen if "/exec?" in s[1])
    assert exec_path.startswith("/api/v1/namespaces/harness/pods/p1/exec?command=sh&command=-c&") and "container=collect" in exec_path
    assert any("/pods?labelSelector=harness/run-id%3D" + RUN_ID in s[1] for s in seen)

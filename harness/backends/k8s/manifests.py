"""The Kubernetes objects of one run, as plain dicts in API form: every isolation knob in pure functions.

`run_manifests(request, options, train_py=..., keeper_token=...)` builds, without any API call or file
access, the three objects the k8s backend (harness/backends/k8s/backend.py) creates for a run, and
`to_model` proves each survives the round trip through the official client's own models (a misspelled or
misplaced field would be lost on the way, and is an error).

    Job (batch/v1)           one pod, never retried (backoffLimit 0, restartPolicy Never), ended by the
                             cluster at activeDeadlineSeconds = hard_timeout_s + KEEPER_MARGIN_S +
                             DEADLINE_MARGIN_S (300 s for scheduling, pulling the image and copying /out
                             out: the deadline counts from the Job's start, not the container's), removed
                             ttlSecondsAfterFinished after it ended if the harness could not remove it
    NetworkPolicy            selects the run's pod by its run-id label; policyTypes Ingress and Egress with
    (networking.k8s.io/v1)   no rule: nothing in, nothing out (DNS included)
    ConfigMap (v1)           the candidate train.py, byte for byte (binaryData), immutable; at most 1 MiB

The pod mirrors the docker backend's container (harness/backends/docker/spec.py, whose functions build the
command and the environment here too), with two containers:

    run      PID 1 is the keeper (keeper_command: its own deadline, reaping, and the last line that says
             how the run ended), then the run's command; uid/gid 1000 (runAsNonRoot), read-only root file
             system, no capabilities, no privilege escalation, seccomp RuntimeDefault, no service account
             token, no service links, no host namespaces; memory = limits.memory and cpu = limits.cpus
             (requests = limits), nvidia.com/gpu = one per request.gpu_uuids (the device plugin picks the
             device: the UUIDs name this machine's GPUs, not the node's)
    collect  sleeps until the harness copies /out out of it (`kubectl exec tar`, see stream.py) once the
             run container has ended; it sees /out read-only and nothing else, under the same locks

What the run sees:

    /work/train.py   the candidate: the ConfigMap's one key, mounted read-only (subPath)
    /fixed           fixed/ (read-only)
    /data            the data cache (read-only); with request.data_entries only those entries, each its
                     own subPath mount (the rest is not in the pod at all)
    /mnt/<name>      request.extra_mounts (read-only) and request.rw_mounts (writable)
    /out             emptyDir medium Memory (a tmpfs, as in docker) of limits.output bytes
    /tmp, /dev/shm   emptyDir medium Memory of limits.tmpfs and limits.shm bytes

Host folders reach the pod only through `VolumeMap`s: a folder of this machine (the data cache, fixed/, an
extra mount) is, at the same relative path, on a PersistentVolumeClaim or on a hostPath of the nodes. The
data cache and fixed/ are mounted readOnly on the volumeMount and, for a claim, on the claim source too (a
hostPath source has no such field). A folder under no VolumeMap is refused (K8sUnsupported).

What does not cross (said plainly, not papered over):

  * Unix sockets. The harness serves the training data over a Unix socket (extra_mounts["feed"]) and the
    verified evaluation talks over one (the "sock" mounts). A socket connects only processes on one kernel:
    a pod on another node cannot reach it, and a ReadWriteMany volume (NFS, CephFS) shows the socket file
    there but connect() fails. A request with a socket mount is refused (K8sUnsupported) unless
    options.socket_node names this machine's node and the socket folder is under a hostPath VolumeMap:
    then the pod is pinned to that node (nodeSelector kubernetes.io/hostname). Serving the feed inside
    the cluster (a sidecar, or a Service the NetworkPolicy lets through) would lift this; it is not built.
  * Limits docker has and a pod spec lacks: a pids cap (only the kubelet's node-wide --pod-max-pids), no
    core dumps (the node's ulimit), /out's inode cap (stream.py counts entries when it copies /out out),
    and request.cpuset (this machine's CPUs mean nothing on a node; the CPU manager pins there).
  * The NetworkPolicy holds only where the cluster's network plugin enforces NetworkPolicies (Calico,
    Cilium; not flannel alone), and a plugin may program it a moment after the pod starts.
  * Pod Security admission: with claims only, the pod meets the "restricted" level; a hostPath map (needed
    for sockets) is refused by "baseline" and "restricted", so such a namespace must be "privileged".
  * The keeper lingers KEEPER_LINGER_S (5 s) after the run's command ends (it waits for docker's exec);
    here nothing needs it, so each run's end is seen about 5 s late.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import contract
from harness.backends.base import RunRequest
from harness.backends.docker.keeper import KEEPER_MARGIN_S, KEEPER_TOKEN_ENV
from harness.backends.docker.spec import (DATA_MOUNT, DEFAULT_UID, FIXED_MOUNT, OUT_MOUNT, TMP_MOUNT, TRAIN_PY,
                                          WORK_DIR, container_env, extra_mount_target, keeper_command)
from harness.benchmarks import size_bytes

RUN_CONTAINER = "run"
COLLECT_CONTAINER = "collect"
SHM_MOUNT = "/dev/shm"
CANDIDATE_KEY = "train.py"  # the ConfigMap's key, and the file name under /work
GPU_RESOURCE = "nvidia.com/gpu"
HOSTNAME_LABEL = "kubernetes.io/hostname"

LABEL_APP = "app.kubernetes.io/name"
APP = "harness"
LABEL_RUN_ID = "harness/run-id"  # the NetworkPolicy selects the pod by it; the backend finds the pod by it
LABEL_BENCHMARK = "harness/benchmark"
ANNOTATION_RUN_ID = "harness/run-id"  # the run id unshortened (a label value holds 63 characters)

CONFIGMAP_MAX_BYTES = 1024 * 1024  # the API server's cap on a ConfigMap's data (keys included)
DEADLINE_MARGIN_S = 300  # activeDeadlineSeconds beyond the keeper's deadline: scheduling, image pull, /out copy
TTL_AFTER_FINISHED_S = 600
TERMINATION_GRACE_S = 5  # SIGTERM -> SIGKILL on deletion; the keeper ends the run on SIGTERM at once
COLLECT_RESOURCES = {"cpu": "500m", "memory": "128Mi"}
PULL_POLICIES = ("IfNotPresent", "Never", "Always")

# The mounts that hold a Unix socket: the feed (harness/pipeline/request.py: extra_mounts["feed"]) and the
# verified evaluation's socket folder (harness/pipeline/evaluate.py: rw_mounts / extra_mounts["sock"]).
SOCKET_MOUNTS = frozenset({contract.RUN_FEED, contract.EVAL_SOCKET_DIR})

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class K8sUnsupported(ValueError):
    """The request cannot run as a pod with these options; the message says what and what would allow it."""


class CandidateTooLarge(K8sUnsupported):
    """train.py does not fit in a ConfigMap."""


class ManifestError(ValueError):
    """A manifest does not survive the round trip through the client's models (a misspelled field)."""


# -- where this machine's folders are in the cluster -------------------------------------------------------


@dataclass(frozen=True)
class VolumeMap:
    """Everything under `local_root` on this machine is, at the same relative path, in the claim `claim`
    (under `claim_path`) or under `node_path` on the nodes (a hostPath). Exactly one of the two."""

    local_root: str
    claim: str | None = None
    claim_path: str = ""
    node_path: str | None = None

    def __post_init__(self) -> None:
        if not os.path.isabs(self.local_root):
            raise ValueError(f"volume map: {self.local_root!r} is not an absolute path")
        if (self.claim is None) == (self.node_path is None):
            raise ValueError(f"volume map for {self.local_root}: give a claim or a node path, not both or neither")
        if self.node_path is not None and not os.path.isabs(self.node_path):
            raise ValueError(f"volume map for {self.local_root}: node path {self.node_path!r} is not absolute")
        if self.claim is not None and not _dns_subdomain(self.claim):
            raise ValueError(f"volume map for {self.local_root}: {self.claim!r} is not a valid claim name")

    def relative(self, path: Path | str) -> str | None:
        """path below local_root as a relative POSIX path ("" for the root itself), or None."""
        root = os.path.normpath(self.local_root)
        p = os.path.normpath(os.path.abspath(str(path)))
        if p == root:
            return ""
        return os.path.relpath(p, root) if p.startswith(root.rstrip("/") + "/") else None

    def source(self, read_only: bool) -> dict[str, Any]:
        """The volume source (the map's root): the claim, readOnly when the mount is, or the hostPath."""
        if self.claim is not None:
            return {"persistentVolumeClaim": {"claimName": self.claim, "readOnly": read_only}}
        return {"hostPath": {"path": self.node_path, "type": "Directory"}}

    def sub_path(self, rel: str) -> str:
        return "/".join(p for p in (self.claim_path.strip("/") if self.claim else "", rel) if p)

    def describe(self) -> str:
        where = f"pvc:{self.claim}{'/' + self.claim_path.strip('/') if self.claim_path.strip('/') else ''}" \
            if self.claim else f"hostpath:{self.node_path}"
        return f"{self.local_root}={where}"


def parse_volume_maps(text: str) -> tuple[VolumeMap, ...]:
    """"LOCAL=pvc:CLAIM[/PATH];LOCAL=hostpath:/NODE/PATH" (the HARNESS_K8S_VOLUMES syntax) -> VolumeMaps."""
    maps = []
    for item in (x.strip() for x in text.split(";")):
        if not item:
            continue
        local, sep, where = item.partition("=")
        kind, sep2, target = where.partition(":")
        if not sep or not sep2 or not target:
            raise ValueError(f"volume map {item!r}: use LOCAL=pvc:CLAIM[/PATH] or LOCAL=hostpath:/NODE/PATH")
        if kind == "pvc":
            claim, _, sub = target.partition("/")
            maps.append(VolumeMap(local, claim=claim, claim_path=sub))
        elif kind == "hostpath":
            maps.append(VolumeMap(local, node_path=target))
        else:
            raise ValueError(f"volume map {item!r}: {kind!r} is neither pvc nor hostpath")
    return tuple(maps)


@dataclass(frozen=True)
class K8sOptions:
    """What the backend was configured with (harness/backends/k8s/backend.py's K8sBackend arguments)."""

    image: str
    namespace: str = "harness"
    runtime_class_name: str | None = None  # e.g. "nvidia", "gvisor"
    volumes: tuple[VolumeMap, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    socket_node: str | None = None  # this machine's node: socket mounts allowed, the pod pinned there
    node_selector: dict[str, str] = field(default_factory=dict)
    uid: int = DEFAULT_UID
    ttl_after_finished_s: int = TTL_AFTER_FINISHED_S

    def __post_init__(self) -> None:
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid Kubernetes name (DNS-1123 label)")
        if self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(f"image pull policy {self.image_pull_policy!r}: use one of {', '.join(PULL_POLICIES)}")
        if self.uid <= 0:
            raise ValueError("the run's uid must not be root (0)")

    def volume_for(self, path: Path | str) -> tuple[VolumeMap, str] | None:
        """The innermost VolumeMap holding path, and path relative to its root."""
        found = [(vm, rel) for vm in self.volumes if (rel := vm.relative(path)) is not None]
        return max(found, key=lambda x: len(x[0].local_root)) if found else None


# -- names and labels --------------------------------------------------------------------------------------


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def _dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and all(_DNS_LABEL.fullmatch(p) for p in name.split("."))


def dns_name(prefix: str, value: str, limit: int = 63) -> str:
    """prefix-value as a DNS-1123 label; a hash of value is added when value had to be changed or cut."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    name = f"{prefix}-{slug}" if slug else prefix
    if slug != value or len(name) > limit:
        name = f"{name[:limit - 9].rstrip('-')}-{_hash(value)}"
    return name


def label_value(value: str) -> str:
    """value as a label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends), hashed if changed."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", value)
    safe = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", safe)
    if safe == value and len(safe) <= 63:
        return safe
    cut = re.sub(r"[^A-Za-z0-9]+$", "", safe[:54])
    return f"{cut}-{_hash(value)}" if cut else _hash(value)


@dataclass(frozen=True)
class RunNames:
    job: str
    config_map: str
    network_policy: str
    run_label: str  # the run-id label's value

    @classmethod
    def of(cls, run_id: str) -> RunNames:
        job = dns_name("harness", run_id)
        return cls(job=job, config_map=f"{job}-train-py", network_policy=f"{job}-isolate",
                   run_label=label_value(run_id))


def labels(request: RunRequest) -> dict[str, str]:
    return {LABEL_APP: APP, LABEL_RUN_ID: label_value(request.run_id),
            LABEL_BENCHMARK: label_value(request.benchmark.name)}


def run_selector(request: RunRequest) -> str:
    """The label selector of the run's pod (and of everything the backend made for it)."""
    return f"{LABEL_RUN_ID}={label_value(request.run_id)}"


def _metadata(request: RunRequest, name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(request),
            "annotations": {ANNOTATION_RUN_ID: request.run_id}}


# -- the pieces of the pod -----------------------------------------------------------------------------------


def active_deadline_s(request: RunRequest) -> int:
    return int(math.ceil(float(request.hard_timeout_s) + KEEPER_MARGIN_S + DEADLINE_MARGIN_S))


def cpu_quantity(cpus: float) -> str:
    milli = int(round(cpus * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def collector_command(seconds: int) -> list[str]:
    """The collect container: wait (ending at once on SIGTERM) until the harness has copied /out out."""
    return ["sh", "-c", f'trap "exit 0" TERM INT; sleep {int(seconds)} & wait']


def container_security(uid: int) -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security(uid: int) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


def _plain(kind: str, name: str) -> str:
    if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise K8sUnsupported(f"{kind} {name!r} is not a plain file name (letters, digits, _ . -)")
    return name


def socket_mounts(request: RunRequest) -> list[str]:
    return sorted(n for n in {**request.extra_mounts, **request.rw_mounts} if n in SOCKET_MOUNTS)


def _check_sockets(request: RunRequest, options: K8sOptions) -> None:
    for name in socket_mounts(request):
        path = {**request.extra_mounts, **request.rw_mounts}[name]
        mapped = options.volume_for(path)
        if options.socket_node and mapped is not None and mapped[0].node_path is not None:
            continue
        raise K8sUnsupported(
            f"the k8s backend cannot give the run its {name!r} mount ({path}): it holds a Unix socket the harness "
            "serves from this machine, and a Unix socket connects only processes on one kernel (a pod on another "
            "node cannot reach it; on a ReadWriteMany volume the file shows but connect() fails). Allowed only "
            "when the pod runs on this machine's node: set socket_node to that node's name and map the folder "
            "with a hostPath volume (LOCAL=hostpath:/NODE/PATH). Serving the feed inside the cluster (a sidecar) "
            "is not implemented")


def _mapped(options: K8sOptions, what: str, path: Path | str) -> tuple[VolumeMap, str]:
    found = options.volume_for(path)
    if found is None:
        known = "; ".join(vm.describe() for vm in options.volumes) or "none"
        raise K8sUnsupported(f"the k8s backend cannot give the run {what} ({path}): no volume map holds it "
                             f"(volume maps: {known}); add one, e.g. {Path(path).parent}=pvc:CLAIM or "
                             f"{Path(path).parent}=hostpath:/NODE/PATH (HARNESS_K8S_VOLUMES)")
    return found


def _mount(name: str, target: str, read_only: bool, sub_path: str = "") -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "mountPath": target, "readOnly": read_only}
    if sub_path:
        m["subPath"] = sub_path
    return m


def _memory_dir(name: str, size: str) -> dict[str, Any]:
    return {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": str(size_bytes(size))}}


def volumes_and_mounts(request: RunRequest, options: K8sOptions,
                       names: RunNames) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the run container's mounts (see the module docstring for what the run sees)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if request.mount_train_py:
        volumes.append({"name": "train-py", "configMap": {
            "name": names.config_map, "items": [{"key": CANDIDATE_KEY, "path": CANDIDATE_KEY}], "defaultMode": 0o444}})
        mounts.append(_mount("train-py", TRAIN_PY, True, CANDIDATE_KEY))
    vm, rel = _mapped(options, "fixed/", request.fixed_dir)
    volumes.append({"name": "fixed", **vm.source(read_only=True)})
    mounts.append(_mount("fixed", FIXED_MOUNT, True, vm.sub_path(rel)))
    entries = request.data_entries
    if entries is None or entries:
        vm, rel = _mapped(options, "the data cache", request.data_dir)
        volumes.append({"name": "data", **vm.source(read_only=True)})
        if entries is None:
            mounts.append(_mount("data", DATA_MOUNT, True, vm.sub_path(rel)))
        for entry in entries or []:
            _plain("data entry", entry)
            mounts.append(_mount("data", f"{DATA_MOUNT}/{entry}", True, vm.sub_path(f"{rel}/{entry}".lstrip("/"))))
    for kind, table, read_only in (("ro", request.extra_mounts, True), ("rw", request.rw_mounts, False)):
        for i, (name, path) in enumerate(sorted(table.items())):
            target = extra_mount_target(_plain("mount name", name))
            vm, rel = _mapped(options, f"its {name!r} mount", path)
            volumes.append({"name": f"{kind}-{i}", **vm.source(read_only=read_only)})
            mounts.append(_mount(f"{kind}-{i}", target, read_only, vm.sub_path(rel)))
    limits = request.benchmark.limits
    volumes += [_memory_dir("out", limits.output), _memory_dir("tmp", limits.tmpfs), _memory_dir("shm", limits.shm)]
    mounts += [_mount("out", OUT_MOUNT, False), _mount("tmp", TMP_MOUNT, False), _mount("shm", SHM_MOUNT, False)]
    return volumes, mounts


# -- the three objects -------------------------------------------------------------------------------------


def job_manifest(request: RunRequest, options: K8sOptions, names: RunNames, keeper_token: str = "") -> dict[str, Any]:
    limits = request.benchmark.limits
    gpus = len(request.gpu_uuids)
    deadline = active_deadline_s(request)
    volumes, mounts = volumes_and_mounts(request, options, names)
    env = container_env(request, gpus=bool(gpus))
    if keeper_token:  # the keeper moves it out of its environment before the run starts (keeper.py)
        env[KEEPER_TOKEN_ENV] = keeper_token
    resources = {"memory": str(size_bytes(limits.memory))}
    if limits.cpus:
        resources["cpu"] = cpu_quantity(limits.cpus)
    if gpus:
        resources[GPU_RESOURCE] = str(gpus)
    run = {
        "name": RUN_CONTAINER, "image": options.image, "imagePullPolicy": options.image_pull_policy,
        "command": keeper_command(request), "workingDir": WORK_DIR,
        "env": [{"name": k, "value": str(v)} for k, v in sorted(env.items())],
        "resources": {"limits": resources, "requests": dict(resources)},
        "securityContext": container_security(options.uid), "volumeMounts": mounts,
    }
    collect = {
        "name": COLLECT_CONTAINER, "image": options.image, "imagePullPolicy": options.image_pull_policy,
        "command": collector_command(deadline), "workingDir": "/",
        "resources": {"limits": dict(COLLECT_RESOURCES), "requests": dict(COLLECT_RESOURCES)},
        "securityContext": container_security(options.uid), "volumeMounts": [_mount("out", OUT_MOUNT, True)],
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "hostNetwork": False, "hostPID": False, "hostIPC": False, "shareProcessNamespace": False,
        "hostname": "harness", "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": pod_security(options.uid), "containers": [run, collect], "volumes": volumes,
    }
    if options.runtime_class_name:
        pod["runtimeClassName"] = options.runtime_class_name
    selector = dict(options.node_selector)
    if socket_mounts(request):
        selector[HOSTNAME_LABEL] = str(options.socket_node)
    if selector:
        pod["nodeSelector"] = selector
    meta = _metadata(request, names.job, options.namespace)
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": {
            "backoffLimit": 0, "completions": 1, "parallelism": 1, "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": options.ttl_after_finished_s,
            "template": {"metadata": {"labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
                         "spec": pod},
        },
    }


def network_policy_manifest(request: RunRequest, options: K8sOptions, names: RunNames) -> dict[str, Any]:
    """Deny everything in and out of the run's pod: both policy types, no rule."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _metadata(request, names.network_policy, options.namespace),
        "spec": {"podSelector": {"matchLabels": {LABEL_RUN_ID: names.run_label}},
                 "policyTypes": ["Ingress", "Egress"]},
    }


def config_map_manifest(request: RunRequest, options: K8sOptions, names: RunNames, train_py: bytes) -> dict[str, Any]:
    """The candidate, byte for byte; CandidateTooLarge past what a ConfigMap holds."""
    size = len(train_py) + len(CANDIDATE_KEY)
    if size > CONFIGMAP_MAX_BYTES:
        raise CandidateTooLarge(
            f"candidate {request.train_py} is {len(train_py)} bytes: the k8s backend ships train.py in a ConfigMap, "
            f"which holds at most 1 MiB ({CONFIGMAP_MAX_BYTES} bytes, key included); make the file smaller or use "
            "the docker backend")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(request, names.config_map, options.namespace),
            "immutable": True, "binaryData": {CANDIDATE_KEY: base64.b64encode(train_py).decode("ascii")}}


@dataclass
class RunManifests:
    names: RunNames
    job: dict[str, Any]
    network_policy: dict[str, Any]
    config_map: dict[str, Any] | None  # None when the run gets no candidate (the evaluator)

    def objects(self) -> list[dict[str, Any]]:
        """In the order they are created: the policy before anything can start, the Job last."""
        return [self.network_policy, *([self.config_map] if self.config_map else []), self.job]


def run_manifests(request: RunRequest, options: K8sOptions, *, train_py: bytes | None,
                  keeper_token: str = "") -> RunManifests:
    """Every object of one run. Pure: reads only its arguments. K8sUnsupported says what cannot cross."""
    _check_sockets(request, options)
    names = RunNames.of(request.run_id)
    config_map = None
    if request.mount_train_py:
        if train_py is None:
            raise ValueError("the request mounts train.py: pass its bytes")
        config_map = config_map_manifest(request, options, names, train_py)
    return RunManifests(names=names, job=job_manifest(request, options, names, keeper_token),
                        network_policy=network_policy_manifest(request, options, names), config_map=config_map)


# -- the round trip through the client's models ------------------------------------------------------------

MODEL_OF_KIND = {"Job": "V1Job", "NetworkPolicy": "V1NetworkPolicy", "ConfigMap": "V1ConfigMap"}


def to_model(obj: dict[str, Any], type_name: str | None = None) -> Any:
    """obj as the client's model (what the API classes send), deserialized by the client's own deserializer;
    ManifestError unless serializing the model gives obj back exactly (a misspelled key is dropped on the way)."""
    from kubernetes.client import ApiClient, Configuration

    type_name = type_name or MODEL_OF_KIND[obj.get("kind", "")]
    what = f"{obj.get('kind', type_name)} {obj.get('metadata', {}).get('name', '?')}"
    with ApiClient(Configuration()) as api:
        try:
            model = api.deserialize(json.dumps(obj), type_name, "application/json")
        except Exception as e:  # noqa: BLE001 - a wrong type: pydantic's ValidationError, or the client's own
            raise ManifestError(f"{what} is not a valid {type_name}: {e}") from e
        back = api.sanitize_for_serialization(model)
    if back != obj:
        raise ManifestError(f"{what} does not survive the round trip through {type_name} (misspelled or misplaced "
                            f"fields): {'; '.join(differences(obj, back)[:10])}")
    return model


def differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths ("spec.template.spec.containers[0].readOnlyRootFileSystem: lost")."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got)):
            here = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"{here}: lost")
            elif key not in want:
                out.append(f"{here}: added")
            else:
                out += differences(want[key], got[key], here)
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if want == got else [f"{path}: {want!r} became {got!r}"]

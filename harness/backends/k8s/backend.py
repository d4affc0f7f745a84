"""The k8s backend: one Kubernetes Job per run (its objects: harness/backends/k8s/manifests.py).

    K8sBackend(image=None, runtime=None, namespace=None, *, volumes=None, socket_node=None, ...)
        .execute(request, on_line) -> ProcessOutcome

  1. build the run's objects and prove each survives the round trip through the client's models
     (a request that cannot cross to a pod, e.g. one with a Unix-socket mount, is an outcome with
     infra_error saying what and why; see manifests.py);
  2. load the kube config (the first time a run needs it: making the backend needs no cluster; no
     config is an outcome with infra_error naming what was tried);
  3. create the NetworkPolicy (deny all, before anything can start), the ConfigMap (train.py) and the
     Job, all with fieldValidation=Strict (the server refuses a field it does not know);
  4. watch the pod every poll_s: once the run container runs, a thread follows its log into the capped
     log file run_dir/log.txt and, through a queue, to on_line (stream.py); an image that cannot be
     pulled, an eviction or a pod that does not start within start_timeout_s is an infra_error;
  5. the clock: hard_timeout_s after the run container was first seen running, the run is timed out
     (kill_reason "timeout"); the keeper ends it at its own deadline (KEEPER_MARGIN_S later) and /out is
     still copied; if the container has not ended stop_grace_s after the timeout the Job is deleted
     (its /out is lost). request.cancel deletes the Job at once (kill_reason "cancelled"). The Job's
     activeDeadlineSeconds ends everything if this process is gone (reported as a timeout if seen);
  6. when the run container has ended: the exit code and OOMKilled from its terminated state (the
     kubelet's word, not the run's), the keeper's line from the log (its own deadline, /out seen full),
     then /out copied out of the collect container into run_dir/out (stream.py);
  7. ALWAYS delete the Job (propagationPolicy Background), wait for its pod to go, then delete the
     ConfigMap and the NetworkPolicy (last, so it outlives the pod); what cannot be deleted is named in
     infra_error with the kubectl line that removes it.

Ctrl-C at any point deletes everything and returns an outcome with aborted=True; execute never raises.
Outcome fields beyond the common ones: node (the pod's nodeName), job_id ("<namespace>/<job name>"),
image (the image id the kubelet ran), image_tag (the image asked for), runtime (the RuntimeClass),
output_bytes.

Verified here without a cluster: the manifests against the client's own models (tests/test_k8s.py, golden
files), and this module's steps against a small stand-in for the three API classes. Never run against a
live API server: the exact status sequences a real kubelet reports, the exec stream of /out, log
following across kubelet log rotation, and NetworkPolicy enforcement are untested.

The executor hooks: the node a pod lands on is not known before it runs, and probing its hardware inside
the pod is not implemented, so probe_hardware raises HardwareError saying so (give the hardware
explicitly), and start_telemetry returns no sampler with the reason. stage_in and stage_out have nothing to
do: the candidate travels in the ConfigMap and /out comes back inside execute.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import urllib3
from kubernetes.client.exceptions import ApiException

from harness import contract
from harness.backends.base import LineCallback, ProcessOutcome, RunRequest
from harness.backends.docker.keeper import KEEPER_MARGIN_S, KEEPER_REFUSED
from harness.backends.docker.spec import DEFAULT_UID
from harness.backends.k8s.kubeapi import K8sApi, KubeConfigMissing, load_api
from harness.backends.k8s.manifests import (COLLECT_CONTAINER, RUN_CONTAINER, K8sOptions, K8sUnsupported,
                                            ManifestError, RunManifests, VolumeMap, parse_volume_maps,
                                            run_manifests, run_selector, to_model)
from harness.backends.k8s.stream import LogReader, copy_out
from harness.backends.logsink import LogSink, deliver_lines

DEFAULT_IMAGE = "harness-cpu:latest"
LOG_NAME = contract.RUN_LOG
POLL_S = 1.0  # how often the pod's status is read
TICK_S = 0.1  # how often lines go to on_line between two reads
START_TIMEOUT_S = 600.0  # scheduling and pulling the image
STOP_GRACE_S = KEEPER_MARGIN_S + 5.0  # after the hard timeout, how long the keeper has to end the run itself
EXIT_DRAIN_S = 5.0  # after the run container ended, how long the log may take to arrive
CLEANUP_WAIT_S = 30.0  # after deleting the Job, how long to wait for its pod to go before the policy goes

ENV_NAMESPACE = "HARNESS_K8S_NAMESPACE"
ENV_VOLUMES = "HARNESS_K8S_VOLUMES"  # "LOCAL=pvc:CLAIM[/PATH];LOCAL=hostpath:/NODE/PATH"
ENV_SOCKET_NODE = "HARNESS_K8S_NODE"  # this machine's node name: socket mounts allowed (manifests.py)

# A container waiting for one of these will not start without a change on the cluster's side.
FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
IMAGE_HINT = ("push the image to a registry the cluster can pull from, or load it into the nodes "
              "(kind load docker-image IMAGE; k3s ctr images import) and use image_pull_policy IfNotPresent or Never")


@dataclasses.dataclass
class _State:
    exit_code: int | None = None
    timed_out: bool = False
    aborted: bool = False
    oom_killed: bool = False
    infra_error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    kill_reason: str | None = None
    image_id: str | None = None
    output_bytes: int | None = None
    node: str | None = None
    job_id: str | None = None
    pod: str | None = None
    reader: LogReader | None = None
    token: str = ""  # the keeper's per-run secret (it marks the keeper's line in the log)
    ran_out: bool = False  # the run container has ended (its terminated state was seen)


class K8sBackend:
    """Runs a RunRequest as a Kubernetes Job; see the module docstring.

    image: the run image, pullable by the nodes; runtime: the pod's RuntimeClass ("nvidia", "gvisor");
    namespace: where the objects go (default $HARNESS_K8S_NAMESPACE, else "harness"); volumes: where
    this machine's folders are in the cluster, VolumeMaps or their text form (default $HARNESS_K8S_VOLUMES);
    socket_node: this machine's node, which allows socket mounts (default $HARNESS_K8S_NODE);
    api: a K8sApi, or a callable returning one, instead of loading the kube config (kubeconfig, context).
    """

    name = "k8s"
    isolated = True  # a locked-down pod: results are "self-reported" or "verified", never "unisolated"

    def __init__(self, image: str | None = None, runtime: str | None = None, namespace: str | None = None, *,
                 volumes: Sequence[VolumeMap] | str | None = None, socket_node: str | None = None,
                 image_pull_policy: str = "IfNotPresent", node_selector: dict[str, str] | None = None,
                 uid: int = DEFAULT_UID, kubeconfig: str | None = None, context: str | None = None,
                 api: K8sApi | Callable[[], K8sApi] | None = None, poll_s: float = POLL_S,
                 start_timeout_s: float = START_TIMEOUT_S, stop_grace_s: float = STOP_GRACE_S,
                 cleanup_wait_s: float = CLEANUP_WAIT_S):
        if volumes is None:
            volumes = os.environ.get(ENV_VOLUMES, "")
        if isinstance(volumes, str):
            volumes = parse_volume_maps(volumes)
        self.options = K8sOptions(
            image=image or DEFAULT_IMAGE, namespace=namespace or os.environ.get(ENV_NAMESPACE) or "harness",
            runtime_class_name=runtime or None, volumes=tuple(volumes), image_pull_policy=image_pull_policy,
            socket_node=socket_node or os.environ.get(ENV_SOCKET_NODE) or None, node_selector=dict(node_selector or {}),
            uid=uid)
        self.image = self.options.image
        self.runtime = self.options.runtime_class_name
        self.kubeconfig = kubeconfig
        self.context = context
        self._api_source = api
        self._api: K8sApi | None = None
        self._lock = threading.Lock()
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self.cleanup_wait_s = cleanup_wait_s

    # -- public -------------------------------------------------------------------------------------------

    def manifests(self, request: RunRequest, keeper_token: str = "") -> RunManifests:
        """The run's objects (reads request.train_py); K8sUnsupported / ManifestError when they cannot be made."""
        train_py = Path(request.train_py).read_bytes() if request.mount_train_py else None
        made = run_manifests(request, self.options, train_py=train_py, keeper_token=keeper_token)
        for obj in made.objects():
            to_model(obj)
        return made

    def execute(self, request: RunRequest, on_line: LineCallback) -> ProcessOutcome:
        st = _State()
        log_path = Path(request.run_dir) / LOG_NAME
        sink: LogSink | None = None
        api: K8sApi | None = None
        made: list[tuple[str, str]] = []
        t_begin = time.time()
        try:
            try:
                Path(request.run_dir).mkdir(parents=True, exist_ok=True)
                sink = LogSink(log_path, request.log_cap_bytes)
                st.token = secrets.token_hex(16)
                try:
                    manifests = self.manifests(request, st.token)
                except (K8sUnsupported, ManifestError) as e:
                    st.infra_error = str(e)
                    return self._outcome(st, sink, log_path, t_begin)
                except OSError as e:
                    st.infra_error = f"candidate {request.train_py} could not be read ({e})"
                    return self._outcome(st, sink, log_path, t_begin)
                api = self._connect(st)
                if api is None:
                    return self._outcome(st, sink, log_path, t_begin)
                st.job_id = f"{self.options.namespace}/{manifests.names.job}"
                self._create(api, manifests, made)
                self._supervise(request, api, manifests, sink, on_line, st)
            except KeyboardInterrupt:
                st.aborted = True
                if sink is not None:
                    sink.note("[harness] aborted (Ctrl-C / SIGTERM): the run's Job is deleted")
            except ApiException as e:
                st.infra_error = f"the Kubernetes API refused a request ({e.status} {e.reason}): {_body(e)}"
            except urllib3.exceptions.HTTPError as e:
                st.infra_error = f"lost the Kubernetes API server ({_short(e)}): check the cluster and the kube config"
            except OSError as e:
                st.infra_error = f"harness could not prepare the run directory ({e})"
            except Exception as e:  # noqa: BLE001 - a bug here must not leave objects behind or raise
                st.infra_error = f"internal error in the k8s backend: {type(e).__name__}: {_short(e)}"
            finally:
                self._cleanup(api, made, request, st)
            if sink is not None:
                self._deliver(sink, on_line, st, final=True)
            return self._outcome(st, sink, log_path, t_begin)
        except KeyboardInterrupt:  # a second Ctrl-C during the cleanup: still no exception, still no objects
            st.aborted = True
            self._cleanup(api, made, request, st)
            return self._outcome(st, sink, log_path, t_begin)

    # -- the executor hooks (harness/backends/host.py says what each is for) ------------------------------

    def probe_hardware(self, gpu: str | None = None, nvml_module: Any = None) -> Any:
        from harness.hw.context import HardwareError

        raise HardwareError("the k8s backend cannot probe the hardware of the node a run will get: the node is "
                            "chosen by the scheduler when the pod starts, and probing inside the pod is not "
                            "implemented; give the run's hardware explicitly (RunOptions.hardware)")

    def start_telemetry(self, gpu_uuid: str | None, series_path: Path, nvml_module: Any = None) -> tuple[Any, str | None]:
        return None, ("no GPU telemetry: the k8s backend's runs are on cluster nodes, and sampling NVML there "
                      "is not implemented")

    def stage_in(self, request: RunRequest) -> None:
        """Nothing to ship ahead: train.py travels in the run's ConfigMap, the inputs on the mapped volumes."""

    def stage_out(self, request: RunRequest) -> None:
        """Nothing to bring back here: execute copies /out into run_dir/out before it deletes the pod."""

    def cancel(self, request: RunRequest) -> None:
        """End the run early: execute watches request.cancel and deletes the Job (the run still gets a record)."""
        if request.cancel is not None:
            request.cancel.set()

    # -- steps --------------------------------------------------------------------------------------------

    def _connect(self, st: _State) -> K8sApi | None:
        with self._lock:
            if self._api is None:
                source = self._api_source
                try:
                    if source is None:
                        self._api = load_api(self.kubeconfig, self.context)
                    else:
                        self._api = source() if callable(source) and not isinstance(source, K8sApi) else source
                except KubeConfigMissing as e:
                    st.infra_error = str(e)
                except Exception as e:  # noqa: BLE001 - a broken kubeconfig (bad certificate, plugin missing)
                    st.infra_error = f"could not set up the Kubernetes client ({type(e).__name__}: {e})"
            return self._api

    def _create(self, api: K8sApi, m: RunManifests, made: list[tuple[str, str]]) -> None:
        """The policy first (nothing of the run may start without it), then the candidate, then the Job.
        Each is noted before it is asked for: a create that times out may still have happened."""
        ns = self.options.namespace
        made.append(("NetworkPolicy", m.names.network_policy))
        api.networking.create_namespaced_network_policy(namespace=ns, body=to_model(m.network_policy),
                                                        field_validation="Strict")
        if m.config_map is not None:
            made.append(("ConfigMap", m.names.config_map))
            api.core.create_namespaced_config_map(namespace=ns, body=to_model(m.config_map), field_validation="Strict")
        made.append(("Job", m.names.job))
        api.batch.create_namespaced_job(namespace=ns, body=to_model(m.job), field_validation="Strict")

    def _supervise(self, request: RunRequest, api: K8sApi, m: RunManifests, sink: LogSink, on_line: LineCallback,
                   st: _State) -> None:
        ns = self.options.namespace
        selector = run_selector(request)
        start_by = time.time() + self.start_timeout_s
        timed_out_at: float | None = None
        while True:
            now = time.time()
            pod = _newest(api.core.list_namespaced_pod(namespace=ns, label_selector=selector))
            run = _container_status(pod, RUN_CONTAINER)
            state = run.state if run is not None else None
            if pod is not None:
                st.pod = pod.metadata.name
                st.node = (pod.spec.node_name if pod.spec else None) or st.node
            if run is not None and run.image_id:
                st.image_id = run.image_id
            if state is not None and (state.running or state.terminated) and st.reader is None:
                st.reader = LogReader(api.core, st.pod, ns, RUN_CONTAINER, sink, st.token)
                st.reader.start()
            if state is not None and state.running and st.started_at is None:
                st.started_at = now
            if state is not None and state.terminated:
                self._ended(state.terminated, now, st)
                break
            trouble = _pod_trouble(pod)
            if trouble:
                st.infra_error = trouble
                break
            if pod is None or (pod.status and pod.status.phase in ("Failed", "Succeeded")) or \
                    (pod.metadata and pod.metadata.deletion_timestamp):
                if self._job_failed(api, m, request, sink, st, now):
                    break
            if request.cancel is not None and request.cancel.is_set():
                st.kill_reason, st.ended_at = "cancelled", now
                sink.note("[harness] cancelled by the harness: the run's Job is deleted")
                self._delete_job(api, m)
                break
            if st.started_at is not None:
                if timed_out_at is None and now >= st.started_at + request.hard_timeout_s:
                    timed_out_at = st.ended_at = now
                    st.timed_out, st.kill_reason = True, "timeout"
                    sink.note(f"[harness] hard timeout of {request.hard_timeout_s:g}s reached: the run is ended")
                elif timed_out_at is not None and now >= timed_out_at + self.stop_grace_s:
                    sink.note(f"[harness] the run's init did not end it within {self.stop_grace_s:g}s: the run's Job "
                              "is deleted (its /out is lost)")
                    self._delete_job(api, m)
                    break
            elif now >= start_by:
                st.infra_error = (f"the run's pod did not start within {self.start_timeout_s:g}s"
                                  f"{': ' + _pending_why(pod) if _pending_why(pod) else ''}; see `kubectl -n {ns} "
                                  f"describe job {m.names.job}`")
                break
            self._wait(sink, on_line, st, self.poll_s)
        if st.ran_out:
            self._finish(request, api, m, sink, on_line, st)

    def _ended(self, term: Any, now: float, st: _State) -> None:
        """The run container's terminated state, as the kubelet saw it."""
        st.ran_out = True
        st.exit_code = term.exit_code
        st.oom_killed = term.reason == "OOMKilled"
        if st.started_at is None:  # it ran between two looks: its length by the node's own clock
            took = (term.finished_at - term.started_at).total_seconds() if term.finished_at and term.started_at else 0
            st.started_at = now - max(took, 0.0)
        if st.ended_at is None:
            st.ended_at = now

    def _finish(self, request: RunRequest, api: K8sApi, m: RunManifests, sink: LogSink, on_line: LineCallback,
                st: _State) -> None:
        """The run container has ended: the rest of its log, the keeper's word, then /out."""
        reader = st.reader
        end = time.time() + EXIT_DRAIN_S
        while reader is not None and reader.is_alive() and time.time() < end:
            self._wait(sink, on_line, st, TICK_S)
        if reader is not None and reader.error is not None:
            sink.note(f"[harness] the run's log could not be read to its end: {reader.error!r}")
        keeper = reader.keeper.result if reader is not None else None
        _code, reason, seen_full = keeper or (None, "", False)
        if reason == "deadline" and st.kill_reason is None:
            st.timed_out, st.kill_reason = True, "timeout"
            sink.note(f"[harness] the run's own deadline (hard timeout {request.hard_timeout_s:g}s + "
                      f"{KEEPER_MARGIN_S:g}s) ended it")
        if keeper is None and st.exit_code == KEEPER_REFUSED and st.infra_error is None:
            st.infra_error = ("the pod's init (the keeper) refused to run under this runtime (see the log): report it "
                              "with the node's container runtime and RuntimeClass")
        if st.oom_killed:
            sink.note("[harness] the run container was killed for using more memory than limits.memory "
                      "(/out, /tmp and /dev/shm count against it)")
        pod = _newest(api.core.list_namespaced_pod(namespace=self.options.namespace, label_selector=run_selector(request)))
        collector = _container_status(pod, COLLECT_CONTAINER)
        if collector is None or collector.state is None or not collector.state.running:
            sink.note("[harness] /out could not be copied: the pod's collect container is not running")
            return
        try:
            copied = copy_out(api, pod.metadata.name, self.options.namespace, COLLECT_CONTAINER, request, sink,
                              seen_full)
        except (ApiException, urllib3.exceptions.HTTPError) as e:
            st.infra_error = f"could not copy the run's /out out of its pod ({_short(e)}): check the cluster"
            sink.note(f"[harness] {st.infra_error}")
            return
        st.output_bytes = copied.bytes
        if copied.limit_reached:
            st.kill_reason = st.kill_reason or "output_limit"

    def _job_failed(self, api: K8sApi, m: RunManifests, request: RunRequest, sink: LogSink, st: _State,
                    now: float) -> bool:
        """True when the Job has failed (its deadline, most likely): the run is over without its end seen."""
        job = api.batch.read_namespaced_job(name=m.names.job, namespace=self.options.namespace)
        for cond in (job.status.conditions if job.status and job.status.conditions else []):
            if cond.type == "Failed" and cond.status == "True":
                st.ended_at = st.ended_at or now
                if cond.reason == "DeadlineExceeded":
                    st.timed_out, st.kill_reason = True, st.kill_reason or "timeout"
                    sink.note(f"[harness] the Job's deadline ({m.job['spec']['activeDeadlineSeconds']}s from its "
                              "start) ended the run (its /out is lost)")
                elif st.infra_error is None:
                    st.infra_error = f"the run's Job failed before its end was seen ({cond.reason}: {cond.message})"
                return True
        return False

    def _delete_job(self, api: K8sApi, m: RunManifests) -> None:
        api.batch.delete_namespaced_job(name=m.names.job, namespace=self.options.namespace,
                                        propagation_policy="Background")

    def _wait(self, sink: LogSink, on_line: LineCallback, st: _State, seconds: float) -> None:
        end = time.time() + seconds
        while True:
            self._deliver(sink, on_line, st)
            left = end - time.time()
            if left <= 0:
                return
            time.sleep(min(TICK_S, left))

    def _deliver(self, sink: LogSink, on_line: LineCallback, st: _State, final: bool = False) -> None:
        def broke(e: Exception) -> None:
            if st.infra_error is None:
                st.infra_error = f"harness error in the line callback: {e!r}"

        deliver_lines(sink, on_line, broke, final)

    def _cleanup(self, api: K8sApi | None, made: list[tuple[str, str]], request: RunRequest, st: _State) -> None:
        """Delete what was made for the run, whatever happened: the Job (and its pod), then the ConfigMap,
        then the NetworkPolicy, which outlives the pod. Survives a second Ctrl-C; names what is left."""
        if st.reader is not None:
            st.reader.close()
        if api is None or not made:
            return
        ns = self.options.namespace
        order = {"Job": 0, "ConfigMap": 1, "NetworkPolicy": 2}
        left = []
        for kind, name in sorted(made, key=lambda x: order[x[0]]):
            try:
                if kind == "Job":
                    try:
                        api.batch.delete_namespaced_job(name=name, namespace=ns, propagation_policy="Background")
                    except ApiException as e:
                        if e.status != 404:  # 404: deleted already (a cancel, a timeout): its pod may still go
                            raise
                    self._wait_pod_gone(api, request)
                elif kind == "ConfigMap":
                    api.core.delete_namespaced_config_map(name=name, namespace=ns)
                else:
                    api.networking.delete_namespaced_network_policy(name=name, namespace=ns)
            except KeyboardInterrupt:
                st.aborted = True
                left.append(f"{kind} {name} (interrupted)")
            except ApiException as e:
                if e.status != 404:
                    left.append(f"{kind} {name} ({e.status} {e.reason})")
            except Exception as e:  # noqa: BLE001 - the server went away: say what is left
                left.append(f"{kind} {name} ({type(e).__name__}: {_short(e)})")
        made.clear()
        if left:
            msg = (f"could not delete {', '.join(left)}: remove them with `kubectl -n {ns} delete "
                   f"job,configmap,networkpolicy -l {run_selector(request)}`")
            st.infra_error = f"{st.infra_error}; {msg}" if st.infra_error else msg

    def _wait_pod_gone(self, api: K8sApi, request: RunRequest) -> None:
        end = time.time() + self.cleanup_wait_s
        while time.time() < end:
            pods = api.core.list_namespaced_pod(namespace=self.options.namespace, label_selector=run_selector(request))
            if not pods.items:
                return
            time.sleep(min(self.poll_s, max(end - time.time(), 0)))

    def _outcome(self, st: _State, sink: LogSink | None, log_path: Path, t_begin: float) -> ProcessOutcome:
        if sink is not None:
            if st.infra_error and sink.head_bytes == 0 and not sink.closed:
                sink.note(f"[harness] {st.infra_error}")
            sink.close()
        return ProcessOutcome(
            backend=self.name, isolated=True, exit_code=st.exit_code, timed_out=st.timed_out, aborted=st.aborted,
            oom_killed=st.oom_killed, infra_error=st.infra_error,
            started_at=st.started_at if st.started_at is not None else t_begin,
            first_output_at=sink.first_output_at if sink is not None else None,
            ended_at=st.ended_at if st.ended_at is not None else time.time(), log_path=log_path,
            log_truncated=bool(sink and sink.truncated), image=st.image_id, image_tag=self.options.image,
            kill_reason=st.kill_reason, runtime=self.options.runtime_class_name, output_bytes=st.output_bytes,
            node=st.node, job_id=st.job_id)


# -- reading the pod's status ---------------------------------------------------------------------------------


def _newest(pods: Any) -> Any:
    items = list(getattr(pods, "items", None) or [])
    items.sort(key=lambda p: (p.metadata.creation_timestamp is not None, p.metadata.creation_timestamp or 0))
    return items[-1] if items else None


def _container_status(pod: Any, name: str) -> Any:
    if pod is None or pod.status is None:
        return None
    return next((c for c in pod.status.container_statuses or [] if c.name == name), None)


def _pod_trouble(pod: Any) -> str | None:
    """Why the pod will never run the candidate (an image that cannot be pulled, an eviction), or None."""
    if pod is None or pod.status is None:
        return None
    if pod.status.reason == "Evicted":
        return f"the run's pod was evicted by its node ({pod.status.message})"
    for c in pod.status.container_statuses or []:
        waiting = c.state.waiting if c.state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            hint = f": {IMAGE_HINT}" if "Image" in waiting.reason else ""
            return f"container {c.name!r} of the run's pod cannot start ({waiting.reason}: {waiting.message}){hint}"
    return None


def _pending_why(pod: Any) -> str:
    if pod is None or pod.status is None:
        return "no pod was created (a missing RuntimeClass, a quota, an admission policy?)"
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status != "True":
            return f"not scheduled ({cond.reason}: {cond.message})"
    return f"pod {pod.metadata.name} is {pod.status.phase}"


def _body(e: ApiException) -> str:
    return str(getattr(e, "body", "") or "")[:500]


def _short(e: BaseException) -> str:
    """An exception in a line or two (the client's include whole response bodies)."""
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "..."

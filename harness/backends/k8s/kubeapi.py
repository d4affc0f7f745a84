"""The one place the k8s backend reaches a cluster: the kube config (loaded when a run needs it, never at
import or when the backend is made) and the API classes of the official client.

    load_api(kubeconfig=None, context=None) -> K8sApi(batch, core, networking)
        in-cluster (the pod's service account) when KUBERNETES_SERVICE_HOST is set and no kubeconfig was
        named, else the kubeconfig file ($KUBECONFIG or ~/.kube/config); KubeConfigMissing says which
        were tried and how to fix it. The configuration object is the backend's own (nothing global is
        set: two backends may talk to two clusters).

K8sApi.exec_stream runs a command in a container (`kubectl exec`) and yields its output as
(stdout bytes, stderr bytes) chunks, as docker's exec_start(demux=True) does. The tests hand the backend a
small stand-in for K8sApi (no API server can run where they do).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

EXEC_TIMEOUT_S = 600.0  # a /out copy longer than this is cut (the tar stream then ends early, and says so)


class KubeConfigMissing(RuntimeError):
    """No cluster configuration could be loaded; the message names what was tried."""


@dataclass
class K8sApi:
    batch: Any  # kubernetes.client.BatchV1Api
    core: Any  # kubernetes.client.CoreV1Api
    networking: Any  # kubernetes.client.NetworkingV1Api

    def exec_stream(self, pod: str, namespace: str, container: str, command: list[str],
                    timeout_s: float = EXEC_TIMEOUT_S) -> Iterator[tuple[bytes | None, bytes | None]]:
        from kubernetes.stream import stream

        ws = stream(self.core.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=command,
                    stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False, binary=True)
        end = time.monotonic() + timeout_s
        try:
            while True:
                is_open = ws.is_open()
                if is_open:
                    ws.update(timeout=1)
                out, err = ws.read_stdout(timeout=0), ws.read_stderr(timeout=0)
                # The client also keeps a copy of everything it received (capture_all, for read_all()),
                # which would hold all of /out in memory: dropped as it is read.
                if isinstance(getattr(ws, "_all", None), io.BytesIO):
                    ws._all = io.BytesIO()
                if out or err:
                    yield (out or None, err or None)
                if not is_open or time.monotonic() >= end:
                    return
        finally:
            ws.close()


def load_api(kubeconfig: str | None = None, context: str | None = None,
             environ: Mapping[str, str] | None = None) -> K8sApi:
    """The API classes for the configured cluster; KubeConfigMissing when there is no configuration."""
    from kubernetes import client, config

    env = os.environ if environ is None else environ
    cfg = client.Configuration()
    if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as e:
            raise KubeConfigMissing(f"no usable in-cluster Kubernetes configuration (KUBERNETES_SERVICE_HOST is "
                                    f"set, but {e}): run the harness under a service account, or unset "
                                    "KUBERNETES_SERVICE_HOST and point KUBECONFIG at a kubeconfig") from None
    else:
        path = kubeconfig or env.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                    persist_config=False)
        except (config.ConfigException, OSError, ValueError, TypeError) as e:
            raise KubeConfigMissing(
                f"no Kubernetes configuration: not in a cluster (KUBERNETES_SERVICE_HOST is unset) and no usable "
                f"kubeconfig at {path} ({type(e).__name__}: {e}); point KUBECONFIG at a cluster's kubeconfig "
                "(kubectl config view --minify works when it does) or run the harness inside the cluster") from None
    api = client.ApiClient(cfg)
    return K8sApi(batch=client.BatchV1Api(api), core=client.CoreV1Api(api), networking=client.NetworkingV1Api(api))

"""The k8s backend: every run as a Kubernetes Job in a cluster, through the official `kubernetes` client.

    manifests  the objects of one run (Job, NetworkPolicy, ConfigMap) as plain dicts: pure functions, and
               the round trip through the client's own models that proves no field is misspelled
    backend    K8sBackend.execute(request, on_line) -> ProcessOutcome: the run's whole life in the cluster
    stream     the pod's log (read in a thread, the keeper's line taken out) and /out copied out of the pod
    kubeapi    loading the kube config (lazily, never at import or construction) and the three API classes

Nothing here is imported by harness/backends/__init__.py: the registry imports harness.backends.k8s.backend
only when the k8s backend is asked for. The backend has never run against a live cluster (none was
reachable where it was written): see harness/backends/k8s/backend.py for what is verified and what is not.
"""

"""The docker backend: one fresh, locked-down container per run (see harness/backends/docker/spec.py).

    DockerBackend(client=None, image="harness-cpu:latest", runtime=None).execute(request, on_line)
        -> ProcessOutcome

The harness owns the clock and the container's whole life; the kernel owns the limits:

  1. check the daemon, the image and the container runtime (trouble -> an outcome with infra_error
     saying how to fix it; a runtime the daemon lacks is never replaced by runc);
  2. copy the candidate into run_dir/train.py, create run_dir/out (and the rw_mounts);
  3. create the container, attach to its stdout/stderr BEFORE starting it (nothing is lost, and the
     daemon keeps no log copy: the log driver is "none"), start it. PID 1 is the keeper
     (keeper.py's KEEPER_SOURCE): it runs the command, kills everything at its own deadline
     (hard_timeout_s + KEEPER_MARGIN_S) even if this process is gone, and when the command ends it
     kills every other process and writes one line marked with a per-run secret token;
  4. a reader thread (streams.py) drains the output all the time, also past the log cap (a flood only slows
     the candidate to the reader's pace): lines go to run_dir/log.txt (the head up to 3/4 of
     request.log_cap_bytes, then a marker, and at the end the last quarter-cap as the tail with a
     marker saying how much was dropped) and, through a queue, to on_line in the calling thread
     (head lines live, tail lines at the end; so the summary block always reaches both). stdout
     and stderr are separate pipes: every line arrives whole, but where a stderr line lands
     among stdout lines is not fixed; lines longer than 64 KiB are split. The keeper's line is
     taken out of the streams (never logged): it gives the exit code and says the run is over;
  5. the calling thread watches the clock: at hard_timeout_s (or when request.cancel is set) it asks
     the keeper to end the run (SIGUSR1; kill_reason "timeout" / "cancelled"), and kills the
     container outright if the keeper has not answered within stop_grace_s. Kill reasons go into
     the log as "[harness] ..." lines and into `kill_reason`;
  6. /out is a tmpfs of limits.output bytes: writes past it fail inside the container (ENOSPC),
     and nothing of it is on the host disk while the run goes. Once the keeper has reported (no
     process of the run is left), `docker exec tar` streams /out out and it is extracted into
     run_dir/out (output.py): regular files and directories only (symlinks, hard links, devices, FIFOs and
     unsafe names are skipped and noted), at most limits.output bytes and one entry per 4 KiB of
     it, files owned by the invoking user. A /out found full (no free block or inode) gives
     kill_reason "output_limit" (the run could not write all it wanted; pipeline/judge.py makes it a crash);
  7. read State.OOMKilled and ALWAYS remove(force=True).

Ctrl-C (KeyboardInterrupt in the calling thread) at any point kills and removes the container
(its /out is not copied) and returns an outcome with aborted=True. Nothing global is installed (no
signal handlers) and no per-run state lives on the backend: two threads may run two containers
through one DockerBackend at once.

Outcome fields this backend fills beyond the common ones: image, image_tag, runtime (the OCI
runtime's name, e.g. "runc" or "runsc"), runtime_version (its `--version` line, or the daemon's
runc commit), output_bytes (bytes copied to run_dir/out; None when /out could not be copied).
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import docker.errors
import requests

from harness import contract
from harness.backends.base import LineCallback, ProcessOutcome, RunRequest
from harness.backends.docker.client import DOCKER_UP_HINT, client_error, explain_api_error, from_env, image_hint
from harness.backends.docker.keeper import KEEPER_MARGIN_S, KEEPER_REFUSED
from harness.backends.docker.output import copy_out
from harness.backends.docker.runtimes import RuntimeMissing, pick_runtime
from harness.backends.docker.spec import DEFAULT_UID, LABEL, LABEL_RUN_ID, candidate_path, container_spec, out_dir
from harness.backends.docker.streams import Reader, Waiter
from harness.backends.host import OnThisHost
from harness.backends.logsink import LogSink, deliver_lines

DEFAULT_IMAGE = "harness-cpu:latest"
LOG_NAME = contract.RUN_LOG
TICK_S = 0.1  # how often the calling thread looks at the clock
EXIT_DRAIN_S = 5.0  # after the exit, how long the reader may take to deliver the rest
STOP_GRACE_S = 5.0  # after asking the keeper to end the run, how long until the container is killed outright
PAIR_WAIT_S = 2.0  # after the keeper's line on one stream, how long to wait for it on the other
CLEANUP_RETRY_S = 10.0  # how long removing the container is retried (a restarting daemon)


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
    image_tag: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    output_bytes: int | None = None


class DockerBackend(OnThisHost):
    """Runs a RunRequest in a fresh container; see the module docstring.

    runtime: the OCI runtime dockerd starts the container with, by its name in dockerd's config
    ("runsc" for gVisor); None: the daemon's default (runc). A runtime the daemon does not know
    gives an outcome with infra_error (how to install and register it), never a fall-back.
    stop_grace_s: how long the keeper gets to end a timed-out or cancelled run before the
    container is killed outright.
    """

    name = "docker"
    isolated = True  # a container: results are "self-reported" or "verified", never "unisolated"

    def __init__(self, client: Any = None, image: str = DEFAULT_IMAGE, uid: int | None = None,
                 runtime: str | None = None, stop_grace_s: float = STOP_GRACE_S):
        self._client = client
        self.image = image
        self.uid = uid
        self.runtime = runtime or None
        self.stop_grace_s = stop_grace_s
        self._lock = threading.Lock()
        self._runtime_cache: dict[str | None, tuple[str, str]] = {}

    # -- public -------------------------------------------------------------------------------

    def execute(self, request: RunRequest, on_line: LineCallback) -> ProcessOutcome:
        st = _State()
        run_dir = Path(request.run_dir)
        log_path = run_dir / LOG_NAME
        sink: LogSink | None = None
        container = None
        stream = None
        created = False
        t_begin = time.time()
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                sink = LogSink(log_path, request.log_cap_bytes)
                client = self._get_client(st)
                if client is None:
                    return self._outcome(st, request, sink, log_path, t_begin)
                if not self._check_runtime(client, st):
                    return self._outcome(st, request, sink, log_path, t_begin)
                image = self._get_image(client, st)
                if image is None:
                    return self._outcome(st, request, sink, log_path, t_begin)
                uid = self._container_uid()
                problem = self._prepare_dirs(request, uid)
                if problem:
                    st.infra_error = problem
                    return self._outcome(st, request, sink, log_path, t_begin)
                token = secrets.token_hex(16)
                try:
                    spec = container_spec(request, image.id, uid=uid, keeper_token=token, runtime=self.runtime)
                except ValueError as e:  # an unsafe mount or entry name
                    st.infra_error = f"bad run request: {e}"
                    return self._outcome(st, request, sink, log_path, t_begin)
                created = True
                container = self._create(client, spec.to_create_kwargs(), request)
                # Attach before start: every byte is streamed to us, none kept by the daemon.
                stream = container.attach(stdout=True, stderr=True, stream=True, logs=False, demux=True)
                reader = Reader(stream, sink, token)
                reader.start()
                container.start()
                st.started_at = time.time()
                waiter = Waiter(container)
                waiter.start()
                self._supervise(request, client, container, uid, sink, reader, waiter, on_line, st)
            except KeyboardInterrupt:
                st.aborted = True
                if sink is not None:
                    sink.note("[harness] aborted (Ctrl-C / SIGTERM): container killed")
            except docker.errors.ImageNotFound as e:
                st.infra_error = f"image {self.image} not found ({e}): {image_hint(self.image)}"
            except docker.errors.APIError as e:
                st.infra_error = explain_api_error(e, request.gpu_uuids, self.runtime)
            except docker.errors.DockerException as e:
                st.infra_error = f"Docker daemon trouble ({e}): {DOCKER_UP_HINT}"
            except requests.exceptions.RequestException as e:
                st.infra_error = f"lost the Docker daemon during the run ({e}): {DOCKER_UP_HINT}"
            except OSError as e:
                st.infra_error = f"harness could not prepare the run directory ({e})"
            except Exception as e:  # noqa: BLE001 - a bug here must not leave a container or raise
                st.infra_error = f"internal error in the docker backend: {e!r}"
            finally:
                self._cleanup(container, created, request, st)
                if stream is not None:
                    try:
                        stream.close()
                    except Exception:
                        pass
            if sink is not None:
                self._deliver(sink, on_line, st, final=True)
            return self._outcome(st, request, sink, log_path, t_begin)
        except KeyboardInterrupt:
            # A second Ctrl-C during the cleanup: still no exception escapes, still no container.
            st.aborted = True
            self._cleanup(container, created, request, st)
            return self._outcome(st, request, sink, log_path, t_begin)

    def runtime_info(self) -> tuple[str, str]:
        """(name, version) of the runtime this backend's containers get; raises RuntimeError naming the
        fix when the daemon lacks it (for `harness doctor` and the bench)."""
        st = _State()
        client = self._get_client(st)
        if client is None or not self._check_runtime(client, st):
            raise RuntimeError(st.infra_error)
        return st.runtime or "?", st.runtime_version or "unknown"

    # -- steps --------------------------------------------------------------------------------

    def _get_client(self, st: _State) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    self._client = from_env(timeout=60)
                except docker.errors.DockerException as e:
                    st.infra_error = client_error(e)
                    return None
            client = self._client
        try:
            client.ping()
        except Exception as e:  # noqa: BLE001
            st.infra_error = f"Docker daemon not reachable ({e}): {DOCKER_UP_HINT}"
            return None
        return client

    def _check_runtime(self, client: Any, st: _State) -> bool:
        """The runtime the container will get, with its version; False (infra_error) when dockerd lacks it."""
        with self._lock:
            cached = self._runtime_cache.get(self.runtime)
        if cached is None:
            try:
                info = client.info()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                st.infra_error = f"could not ask dockerd for its runtimes ({e}): {DOCKER_UP_HINT}"
                return False
            try:
                cached = pick_runtime(info, self.runtime)
            except RuntimeMissing as e:
                st.infra_error = str(e)
                return False  # not cached: registering it later works without a new backend
            with self._lock:
                self._runtime_cache[self.runtime] = cached
        st.runtime, st.runtime_version = cached
        return True

    def _get_image(self, client: Any, st: _State) -> Any:
        try:
            image = client.images.get(self.image)
        except docker.errors.ImageNotFound:
            st.infra_error = f"image {self.image} not built: {image_hint(self.image)}"
            return None
        except docker.errors.DockerException as e:
            st.infra_error = f"could not inspect image {self.image} ({e}): {DOCKER_UP_HINT}"
            return None
        st.image_id = image.id
        if self.image.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{12,64}", self.image):
            st.image_tag = image.tags[0] if image.tags else None
        else:
            st.image_tag = self.image if ":" in self.image.rsplit("/", 1)[-1] else f"{self.image}:latest"
        return image

    def _container_uid(self) -> int:
        if self.uid is not None:
            return self.uid
        # The invoking user's uid (never root): files the run makes in rw_mounts are theirs.
        uid = os.getuid()
        return uid if uid != 0 else DEFAULT_UID

    def _prepare_dirs(self, request: RunRequest, uid: int) -> str | None:
        for what, p in (("data cache", request.data_dir), ("fixed/", request.fixed_dir)):
            if not Path(p).is_dir():
                return f"{what} {p} is not a directory: prepare the benchmark (`harness prepare`) and check the paths"
        for entry in request.data_entries or []:
            if not (Path(request.data_dir) / entry).exists():
                return (f"data cache {request.data_dir} has no {entry!r}: "
                        "prepare the benchmark again (`harness prepare`)")
        for name, p in request.extra_mounts.items():
            if not Path(p).exists():
                return f"extra mount {name!r}: {p} does not exist"
        if request.mount_train_py:
            src = Path(request.train_py)
            dst = candidate_path(request)
            if not src.is_file():
                return f"candidate {src} not found"
            if src.absolute() != dst.absolute():
                shutil.copyfile(src, dst)
            os.chmod(dst, 0o644)
        # /out is a tmpfs in the container; run_dir/out receives its copy at the end.
        out_dir(request).mkdir(parents=True, exist_ok=True)
        for shared in request.rw_mounts.values():
            shared = Path(shared)
            shared.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(shared, uid, uid)
            elif uid != os.getuid():
                os.chmod(shared, 0o777)
        return None

    def _create(self, client: Any, kwargs: dict[str, Any], request: RunRequest) -> Any:
        try:
            return client.containers.create(**kwargs)
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
        # A container of the same name is left over (a crashed harness): remove it if it is ours.
        try:
            old = client.containers.get(kwargs["name"])
            if old.labels.get(LABEL) == "1":
                old.remove(force=True)
        except docker.errors.NotFound:
            pass
        return client.containers.create(**kwargs)

    def _supervise(self, request: RunRequest, client: Any, container: Any, uid: int, sink: LogSink,
                   reader: Reader, waiter: Waiter, on_line: LineCallback, st: _State) -> None:
        deadline = st.started_at + request.hard_timeout_s
        asked_at: float | None = None  # when the keeper was asked to end the run
        killed = False
        while True:
            self._deliver(sink, on_line, st)
            if reader.keeper.is_set() or waiter.done.is_set():
                break
            now = time.time()
            if asked_at is None:
                if request.cancel is not None and request.cancel.is_set():
                    asked_at = self._stop(container, sink, st, "cancelled",
                                          "[harness] cancelled by the harness: container killed")
                elif now >= deadline:
                    asked_at = self._stop(container, sink, st, "timeout",
                                          f"[harness] hard timeout of {request.hard_timeout_s:g}s reached: "
                                          "container killed")
            elif not killed and now >= asked_at + self.stop_grace_s:
                killed = True
                sink.note(f"[harness] the container's init did not end the run within {self.stop_grace_s:g}s: "
                          "container killed outright (its /out is lost)")
                self._hard_kill(container)
            wait = TICK_S if asked_at is not None else min(TICK_S, max(deadline - now, 0.001))
            reader.keeper.wait(wait)
        if reader.keeper.is_set():
            self._finish_reported(request, client, container, uid, sink, reader, waiter, st)
        else:
            self._finish_unreported(container, sink, reader, waiter, st, killed)

    def _finish_reported(self, request: RunRequest, client: Any, container: Any, uid: int, sink: LogSink,
                         reader: Reader, waiter: Waiter, st: _State) -> None:
        """The keeper has reported: nothing of the run is left; copy /out out, then it is removed."""
        code, reason, seen_full = reader.result or (None, "garbled", False)
        if st.ended_at is None:
            st.ended_at = reader.keeper_at
        st.exit_code = code
        if reason == "deadline" and st.kill_reason is None:
            st.timed_out = True
            st.kill_reason = "timeout"
            sink.note(f"[harness] the container's own deadline (hard timeout {request.hard_timeout_s:g}s "
                      f"+ {KEEPER_MARGIN_S:g}s) ended the run")
        reader.both.wait(PAIR_WAIT_S)  # the other stream's last bytes
        try:
            copied = copy_out(request, client, container, uid, sink, seen_full)
            st.output_bytes = copied.bytes
            if copied.limit_reached:
                st.kill_reason = st.kill_reason or "output_limit"
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            st.infra_error = (f"could not copy the run's /out out of its container ({e}): "
                              f"{DOCKER_UP_HINT}")
            sink.note(f"[harness] {st.infra_error}")
        # dockerd records an OOM kill in State.OOMKilled only once the container has exited: end it.
        try:
            self._hard_kill(container)
            if waiter.done.wait(10):
                container.reload()
                st.oom_killed = bool(container.attrs.get("State", {}).get("OOMKilled"))
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass

    def _finish_unreported(self, container: Any, sink: LogSink, reader: Reader, waiter: Waiter, st: _State,
                           killed: bool) -> None:
        """The container ended (or was killed) without the keeper's report: /out went with it."""
        if not waiter.done.wait(30):
            sink.note("[harness] the container did not report its exit within 30 s of the kill")
        if st.ended_at is None:
            st.ended_at = waiter.ended_at
        reader.join(EXIT_DRAIN_S)  # the stream ends when the container's last output is in
        try:
            container.reload()
            state = container.attrs.get("State", {})
            st.oom_killed = bool(state.get("OOMKilled"))
            code = state.get("ExitCode")
            st.exit_code = code if code is not None else waiter.status
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            st.exit_code = waiter.status
            if st.exit_code is None:
                st.infra_error = f"lost the Docker daemon during the run ({waiter.error or e}): {DOCKER_UP_HINT}"
        if waiter.error is not None and st.infra_error is None:
            st.infra_error = (f"lost contact with the Docker daemon during the run ({waiter.error}); "
                              f"the exit code may be the daemon's doing: {DOCKER_UP_HINT}")
        if st.exit_code == KEEPER_REFUSED and st.infra_error is None and "[keeper] refusing" in _tail(sink):
            st.infra_error = ("the container's init (the keeper) refused to run under this runtime "
                              "(see the log): report it with `docker info` attached")
        elif not killed and st.infra_error is None:
            sink.note("[harness] the container ended before its init reported the end of the run "
                      "(killed from inside, or out of memory): its /out could not be copied")
        if st.ended_at is None:
            st.ended_at = time.time()

    def _stop(self, container: Any, sink: LogSink, st: _State, reason: str, note: str) -> float:
        """Ask the keeper to end the run (it kills every process of it, then reports)."""
        now = time.time()
        try:
            container.kill(signal="SIGUSR1")
        except docker.errors.APIError as e:
            if e.status_code == 409 or "is not running" in str(e):
                return now  # ended on its own between the last look and the signal
            raise
        st.ended_at = now
        st.kill_reason = reason
        st.timed_out = reason == "timeout"
        sink.note(note)
        return now

    def _hard_kill(self, container: Any) -> None:
        try:
            container.kill()
        except docker.errors.APIError as e:
            if not (e.status_code == 409 or "is not running" in str(e)):
                raise

    def _deliver(self, sink: LogSink, on_line: LineCallback, st: _State, final: bool = False) -> None:
        def broke(e: Exception) -> None:
            if st.infra_error is None:
                st.infra_error = f"harness error in the line callback: {e!r}"

        deliver_lines(sink, on_line, broke, final)

    def _cleanup(self, container: Any, created: bool, request: RunRequest, st: _State) -> None:
        """Kill and remove the container, whatever happened; survive a second Ctrl-C.

        Retries for about CLEANUP_RETRY_S (the daemon may be restarting). If the container still
        cannot be removed, the outcome says so (infra_error) and `harness janitor` removes it later.
        """
        client = self._client
        deadline = time.time() + CLEANUP_RETRY_S
        delay = 0.1
        last: Exception | None = None
        while True:
            try:
                if container is not None:
                    container.remove(force=True)
                elif created and client is not None:
                    # interrupted inside create(): find it by its run id label
                    for c in client.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={request.run_id}"}):
                        c.remove(force=True)
                return
            except KeyboardInterrupt:
                st.aborted = True
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as e:
                if "already in progress" in str(e):
                    return
                last = e
            except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                last = e
            if time.time() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        name = getattr(container, "name", None) or f"run {request.run_id}"
        msg = f"could not remove container {name} ({last}): run `harness janitor` once dockerd is back"
        st.infra_error = f"{st.infra_error}; {msg}" if st.infra_error else msg

    def _outcome(self, st: _State, request: RunRequest, sink: LogSink | None, log_path: Path,
                 t_begin: float) -> ProcessOutcome:
        if sink is not None:
            if st.infra_error and sink.head_bytes == 0 and not sink.closed:
                sink.note(f"[harness] {st.infra_error}")
            sink.close()
        now = time.time()
        kwargs: dict[str, Any] = dict(
            backend=self.name,
            isolated=True,
            exit_code=st.exit_code,
            timed_out=st.timed_out,
            aborted=st.aborted,
            oom_killed=st.oom_killed,
            infra_error=st.infra_error,
            started_at=st.started_at if st.started_at is not None else t_begin,
            first_output_at=sink.first_output_at if sink is not None else None,
            ended_at=st.ended_at if st.ended_at is not None else now,
            log_path=log_path,
            log_truncated=bool(sink and sink.truncated),
            image=st.image_id,
            image_tag=st.image_tag or self.image,
            kill_reason=st.kill_reason,  # "timeout" | "cancelled" | "output_limit" | None
            runtime=st.runtime,
            runtime_version=st.runtime_version,
            output_bytes=st.output_bytes,
        )
        return ProcessOutcome(**kwargs)


def _tail(sink: LogSink) -> str:
    """The last lines the log got (for recognising the keeper's refusal)."""
    try:
        with open(sink.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""

"""The docker backend: one fresh, locked-down container per run (see harness/container_spec.py).

    DockerBackend(client=None, image="harness-cpu:latest").execute(request, on_line) -> ProcessOutcome

The harness owns the clock and the container's whole life:

  1. check the daemon and the image (trouble -> an outcome with infra_error saying how to fix it);
  2. copy the candidate into run_dir/train.py, make run_dir/out writable for the container user;
  3. create the container, attach to its stdout/stderr BEFORE starting it (nothing is lost, and the
     daemon keeps no log copy: the log driver is "none"), start it;
  4. a reader thread drains the output all the time, also past the log cap (a flood only slows
     the candidate to the reader's pace): lines go to run_dir/log.txt (the head up to 3/4 of
     request.log_cap_bytes, then a marker, and at the end the last quarter-cap as the tail with a
     marker saying how much was dropped) and, through a queue, to on_line in the calling thread
     (head lines live, tail lines at the end; so the summary block always reaches both). stdout
     and stderr are separate pipes: every line arrives whole, but where a stderr line lands
     among stdout lines is not fixed; lines longer than 64 KiB are split;
  5. the calling thread watches the clock (kill at hard_timeout_s), the size of run_dir/out every
     0.5 s (kill when it passes limits.output: best effort, the overshoot is what the candidate
     can write in one poll interval; each file counts at least 4 KiB, which caps inode floods)
     and the exit (a waiter thread on `wait`). Kill reasons go into the log as "[harness] ..."
     lines and into `kill_reason`;
  6. read State.OOMKilled and the exit code; ALWAYS remove(force=True).

Ctrl-C (KeyboardInterrupt in the calling thread) at any point kills and removes the container and
returns an outcome with aborted=True. Nothing global is installed (no signal handlers).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from harness.backends.base import LineCallback, ProcessOutcome, RunRequest
from harness.backends.logsink import LogSink
from harness.benchmarks import size_bytes
from harness.container_spec import (
    DEFAULT_UID,
    LABEL,
    LABEL_RUN_ID,
    candidate_path,
    container_spec,
    out_dir,
)

DEFAULT_IMAGE = "harness-cpu:latest"
LOG_NAME = "log.txt"
OUTPUT_POLL_S = 0.5  # how often run_dir/out is measured
TICK_S = 0.1  # how often the calling thread looks at the clock
EXIT_DRAIN_S = 5.0  # after the exit, how long the reader may take to deliver the rest
MIN_ENTRY_BYTES = 4096  # each file in /out costs at least this much (caps inode floods)
DOCKER_UP_HINT = "start dockerd (see .ci/docker-up)"
CLEANUP_RETRY_S = 10.0  # how long removing the container is retried (a restarting daemon)


# --------------------------------------------------------------------------------------------
# helpers


def docker_available(timeout: float = 3.0) -> bool:
    """True when a Docker daemon answers a ping within `timeout` seconds."""
    client = None
    try:
        client = docker.from_env(timeout=timeout)
        return bool(client.ping())
    except Exception:
        return False
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass


def janitor(client: Any = None, run_id: str | None = None) -> list[str]:
    """Remove (force) every container labelled harness=1 (only that run's with run_id).

    Returns the names of the removed containers. It also removes containers of runs that are
    still going in another process: call it when no harness is running.
    """
    own = client is None
    client = client or docker.from_env(timeout=30)
    try:
        filters = {"label": [f"{LABEL}=1"] + ([f"{LABEL_RUN_ID}={run_id}"] if run_id else [])}
        removed = []
        for c in client.containers.list(all=True, filters=filters):
            try:
                c.remove(force=True)
                removed.append(c.name)
            except docker.errors.NotFound:
                pass
        return removed
    finally:
        if own:
            client.close()


def dir_usage(path: Path, stop_above: int | None = None) -> int:
    """Bytes the files under `path` occupy on disk (each entry at least MIN_ENTRY_BYTES).

    Symlinks are not followed. The walk stops early once the total passes `stop_above`.
    """
    total = 0
    stack = [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += max(st.st_blocks * 512, MIN_ENTRY_BYTES)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                if stop_above is not None and total > stop_above:
                    return total
    return total


def _image_hint(image: str) -> str:
    m = re.fullmatch(r"harness-([a-z0-9]+)(:.*)?", image)
    if m:
        return f"run `harness image build {m.group(1)}`"
    return f"build or pull it (`docker pull {image}`)"


def _explain_api_error(err: Exception, request: RunRequest) -> str:
    text = str(getattr(err, "explanation", None) or err)
    low = text.lower()
    if "could not select device driver" in low or "nvidia-container-cli" in low or ("nvidia" in low and "gpu" in low):
        return (f"GPUs {request.gpu_uuids} requested but Docker cannot give them to the container ({text}): "
                "install the NVIDIA Container Toolkit, run `nvidia-ctk runtime configure --runtime=docker` "
                "and restart dockerd, and check the UUIDs with `nvidia-smi -L`")
    if "bind source path does not exist" in low or "no such file or directory" in low:
        return f"a mount source is missing ({text}): prepare the benchmark data (`harness prepare`) and check paths"
    if "permission denied" in low and "docker.sock" in low:
        return f"no permission to use the Docker socket ({text}): add your user to the docker group"
    return f"Docker refused the container ({text})"


class _Reader(threading.Thread):
    def __init__(self, stream: Any, sink: LogSink):
        super().__init__(name="harness-docker-reader", daemon=True)
        self.stream = stream
        self.sink = sink
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for out, err in self.stream:  # attach(demux=True): (stdout bytes, None) or (None, stderr bytes)
                if out:
                    self.sink.feed(out, 1)
                if err:
                    self.sink.feed(err, 2)
        except BaseException as e:  # noqa: BLE001 - a broken stream ends the reading, nothing else
            self.error = e


class _Waiter(threading.Thread):
    def __init__(self, container: Any):
        super().__init__(name="harness-docker-waiter", daemon=True)
        self.container = container
        self.done = threading.Event()
        self.status: int | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            result = self.container.wait()  # no HTTP timeout: the harness's clock is elsewhere
            self.status = result.get("StatusCode")
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self.ended_at = time.time()
            self.done.set()


# --------------------------------------------------------------------------------------------
# the backend


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


class DockerBackend:
    name = "docker"

    def __init__(self, client: Any = None, image: str = DEFAULT_IMAGE, uid: int | None = None,
                 output_poll_s: float = OUTPUT_POLL_S):
        self._client = client
        self.image = image
        self.uid = uid
        self.output_poll_s = output_poll_s

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
                image = self._get_image(client, st)
                if image is None:
                    return self._outcome(st, request, sink, log_path, t_begin)
                uid = self._container_uid()
                problem = self._prepare_dirs(request, uid)
                if problem:
                    st.infra_error = problem
                    return self._outcome(st, request, sink, log_path, t_begin)
                try:
                    spec = container_spec(request, image.id, uid=uid)
                except ValueError as e:  # an unsafe mount or entry name
                    st.infra_error = f"bad run request: {e}"
                    return self._outcome(st, request, sink, log_path, t_begin)
                created = True
                container = self._create(client, spec.to_create_kwargs(), request)
                # Attach before start: every byte is streamed to us, none kept by the daemon.
                stream = container.attach(stdout=True, stderr=True, stream=True, logs=False, demux=True)
                reader = _Reader(stream, sink)
                reader.start()
                container.start()
                st.started_at = time.time()
                waiter = _Waiter(container)
                waiter.start()
                self._supervise(request, container, sink, reader, waiter, on_line, st)
            except KeyboardInterrupt:
                st.aborted = True
                if sink is not None:
                    sink.note("[harness] aborted (Ctrl-C / SIGTERM): container killed")
            except docker.errors.ImageNotFound as e:
                st.infra_error = f"image {self.image} not found ({e}): {_image_hint(self.image)}"
            except docker.errors.APIError as e:
                st.infra_error = _explain_api_error(e, request)
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

    # -- steps --------------------------------------------------------------------------------

    def _get_client(self, st: _State) -> Any:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as e:
                msg = str(e)
                if "permission denied" in msg.lower():
                    st.infra_error = (f"no permission to use the Docker socket ({msg}): "
                                      "add your user to the docker group or run as root")
                else:
                    st.infra_error = f"Docker daemon not reachable ({msg}): {DOCKER_UP_HINT}"
                return None
        try:
            self._client.ping()
        except Exception as e:  # noqa: BLE001
            st.infra_error = f"Docker daemon not reachable ({e}): {DOCKER_UP_HINT}"
            return None
        return self._client

    def _get_image(self, client: Any, st: _State) -> Any:
        try:
            image = client.images.get(self.image)
        except docker.errors.ImageNotFound:
            st.infra_error = f"image {self.image} not built: {_image_hint(self.image)}"
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
        # The invoking user's uid, so that the files in run_dir/out are theirs; never root.
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
        for out in [out_dir(request), *request.rw_mounts.values()]:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(out, uid, uid)
            elif uid != os.getuid():
                os.chmod(out, 0o777)
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

    def _supervise(self, request: RunRequest, container: Any, sink: LogSink, reader: _Reader,
                   waiter: _Waiter, on_line: LineCallback, st: _State) -> None:
        deadline = st.started_at + request.hard_timeout_s
        out = out_dir(request)
        out_cap = size_bytes(request.benchmark.limits.output)
        next_out_check = st.started_at + self.output_poll_s
        while True:
            self._deliver(sink, on_line, st)
            if waiter.done.is_set():
                st.ended_at = waiter.ended_at
                break
            now = time.time()
            if request.cancel is not None and request.cancel.is_set():
                self._kill(container, sink, st, "cancelled", "[harness] cancelled by the harness: container killed")
                break
            if now >= deadline:
                st.timed_out = True
                self._kill(container, sink, st, "timeout",
                           f"[harness] hard timeout of {request.hard_timeout_s:g}s reached: container killed")
                break
            if now >= next_out_check:
                used = dir_usage(out, stop_above=out_cap)
                if used > out_cap:
                    self._kill(container, sink, st, "output_limit",
                               f"[harness] output directory passed its limit of "
                               f"{request.benchmark.limits.output}: container killed")
                    break
                next_out_check = time.time() + self.output_poll_s
            waiter.done.wait(min(TICK_S, max(deadline - now, 0.001)))
        if st.kill_reason is None:
            st.timed_out = False  # it exited on its own just before the kill
        if not waiter.done.wait(30):
            sink.note("[harness] the container did not report its exit within 30 s of the kill")
        if st.ended_at is None:
            st.ended_at = waiter.ended_at
        # The stream ends when the container's last output is in; give the reader a moment.
        reader.join(EXIT_DRAIN_S)
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
        if st.ended_at is None:
            st.ended_at = time.time()

    def _kill(self, container: Any, sink: LogSink, st: _State, reason: str, note: str) -> None:
        st.ended_at = time.time()
        try:
            container.kill()
        except docker.errors.APIError as e:
            if e.status_code == 409 or "is not running" in str(e):
                st.ended_at = None
                return  # exited on its own between the last look and the kill
            raise
        st.kill_reason = reason
        sink.note(note)

    def _deliver(self, sink: LogSink, on_line: LineCallback, st: _State, final: bool = False) -> None:
        if final:
            sink.close()
        while True:
            try:
                line = sink.lines.get_nowait()
            except queue.Empty:
                return
            try:
                on_line(line)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - the caller's display broke; the run goes on
                if st.infra_error is None:
                    st.infra_error = f"harness error in the line callback: {e!r}"

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
            kill_reason=st.kill_reason,  # "timeout" | "output_limit" | None
        )
        return ProcessOutcome(**kwargs)

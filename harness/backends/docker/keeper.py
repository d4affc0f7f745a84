"""The keeper: PID 1 of every run's container, and the harness's side of its last word.

KEEPER_SOURCE is the program (run by the image's python with `-I -S`, so nothing the run controls is
imported); harness/backends/docker/spec.py puts it in front of the run's command (`keeper_command`),
and KeeperLine finds the line it writes at the end in the container's output streams.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# The keeper: PID 1 of every container (the image's python, `-I -S`, so nothing the run controls
# is imported). It replaces tini and is what makes the limits hold without the harness:
#
#   * it starts the command in a session of its own and reaps every orphan (tini's job);
#   * it kills the command at its own deadline, hard_timeout_s + KEEPER_MARGIN_S after it started,
#     so a run ends even when the harness process is gone (kill -9); the harness's own clock
#     fires first when it is alive and gives the clean outcome;
#   * when the command ends, is stopped (SIGUSR1/SIGTERM/SIGINT/SIGHUP from the harness or
#     `docker stop`) or passes the deadline, it SIGKILLs every other process of the container
#     (kill(-1) until none is left), so nothing of the run survives it;
#   * it looks at /out's free space every 0.25 s: full=1 when it was ever seen full (no free block
#     or inode), so a run that filled /out is known even when what filled it was an unlinked file;
#   * then it writes one line, "\x1e<token> exit=<code> reason=<exit|stop|deadline> full=<0|1>",
#     on stdout and on stderr, and lingers KEEPER_LINGER_S (1 s after its own deadline; longer
#     while a `docker exec` of the harness still runs, at most 600 s more) so that the harness can
#     copy /out (a tmpfs that vanishes with the container) out through `docker exec tar`; then it
#     exits with the command's code.
#
# The token (32 random hex digits per run) reaches it through the environment; it re-executes
# itself at once with the token moved to a pipe, so /proc/1/environ never shows it once the run
# exists, and it makes itself non-dumpable (its fds, memory and environment closed to the run).
# PID 1 of a pid namespace gets no signal from inside it that it has no handler for, so under
# runc the run can neither kill nor stop it. gVisor (runsc, as packaged by Debian, 2022-12)
# lets a process in the sandbox SIGKILL and SIGSTOP PID 1 and read /proc/1/fd: SIGKILL ends the
# container (the run loses its /out), SIGSTOP freezes the deadline, which then holds only while
# the harness lives (its own clock kills the container); see tests/adversarial/test_adv_deadline.py.
# The image must have python3 (>= 3.8), sh, tar, head and stat (tests/test_images.py checks).
KEEPER_MARGIN_S = 2.0
KEEPER_LINGER_S = 5.0
KEEPER_TOKEN_ENV = "HARNESS_KEEPER_TOKEN"
KEEPER_MARK = b"\x1e"  # the byte that starts the keeper's line (ASCII record separator)

KEEPER_SOURCE = r'''
import os, select, signal, sys, time
IGNORE = ("SIGALRM", "SIGUSR2", "SIGPIPE", "SIGQUIT", "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGXFSZ", "SIGIO",
          "SIGPWR", "SIGTSTP", "SIGTTIN", "SIGTTOU")
STOP = ("SIGUSR1", "SIGTERM", "SIGINT", "SIGHUP")
def main():
    env = dict(os.environ)
    token = env.pop("HARNESS_KEEPER_TOKEN", None)
    if token is not None:
        r, w = os.pipe()
        os.write(w, token.encode())
        os.close(w)
        os.set_inheritable(r, True)
        env["HARNESS_KEEPER_FD"] = str(r)
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
        os.execve(sys.executable, argv, env)
    fd = int(env.pop("HARNESS_KEEPER_FD", "-1"))
    token = b""
    if fd >= 0:
        token = os.read(fd, 256)
        os.close(fd)
    try:
        import ctypes
        if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    except Exception as e:
        os.write(2, ("[keeper] refusing to run: %s\n" % (e,)).encode())
        os._exit(125)
    hard = time.monotonic() + float(sys.argv[1])
    linger_s = float(sys.argv[2])
    cmd = sys.argv[4:]
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    stop = []
    signal.signal(signal.SIGCHLD, lambda s, f: None)
    for name in STOP:
        signal.signal(getattr(signal, name), lambda s, f: stop.append(s))
    reset = [signal.SIGCHLD] + [getattr(signal, n) for n in STOP]
    for name in IGNORE:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
            reset.append(getattr(signal, name))
    done = {}
    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            done[pid] = status
    def pause(seconds):
        try:
            select.select([r], [], [], max(seconds, 0))
        except InterruptedError:
            pass
        try:
            while os.read(r, 512):
                pass
        except OSError:
            pass
        reap()
    try:
        main_pid = os.posix_spawnp(cmd[0], cmd, env, setsid=True, setsigdef=reset, setsigmask=(),
                                   file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)])
    except OSError as e:
        os.write(2, ("%s: %s\n" % (cmd[0], e.strerror)).encode())
        main_pid, done[None] = None, 127 << 8
    full = [0, 0.0]
    def look():
        try:
            v = os.statvfs("/out")
        except OSError:
            return
        if (v.f_blocks > 0 and v.f_bfree == 0) or (v.f_files > 0 and v.f_ffree == 0):
            full[0] = 1
        full[1] = time.monotonic()
    reason = "exit"
    while main_pid not in done:
        now = time.monotonic()
        if now >= full[1] + 0.25:
            look()
        if now >= hard:
            reason = "deadline"
            break
        if stop:
            reason = "stop"
            break
        pause(min(hard - now, 0.25))
    look()
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break
        reap()
        time.sleep(0.001)
    reap()
    code = os.waitstatus_to_exitcode(done[main_pid]) if main_pid in done else 128 + signal.SIGKILL
    if code < 0:
        code = 128 - code
    line = b"\x1e" + token + (" exit=%d reason=%s full=%d\n" % (code, reason, full[0])).encode()
    for out in (2, 1):
        try:
            os.set_blocking(out, False)
            give_up = time.monotonic() + 2.0
            data = line
            while data and time.monotonic() < give_up:
                try:
                    data = data[os.write(out, data):]
                except BlockingIOError:
                    select.select([], [out], [], 0.1)
        except OSError:
            pass
    if reason == "deadline":
        linger_s = min(linger_s, 1.0)  # the harness, if alive, acted KEEPER_MARGIN_S ago: likely gone
    linger = time.monotonic() + linger_s
    while True:
        now = time.monotonic()
        if now >= linger + 600:
            break
        if now >= linger and not any(p.isdigit() and p != "1" for p in os.listdir("/proc")):
            break
        pause(0.2)
    os._exit(code)
main()
'''

KEEPER_REFUSED = 125  # the keeper's exit code when it cannot make itself safe (no run was started)


class KeeperLine:
    """Finds the keeper's line ("\\x1e<token> exit=N reason=R full=F\\n") in one output stream.

    feed() returns the bytes to pass on to the log; the keeper's line never reaches it. A tail that
    could be the start of the line is held back until the next chunk (or the end of the stream).
    Without the token (it exists only in the keeper's memory and here) no output can pass for it.
    """

    MAX_REST = 256

    def __init__(self, token: str):
        self.mark = KEEPER_MARK + token.encode() + b" "
        self.held = b""
        self.found = False
        self.rest = b""
        self.result: tuple[int | None, str, bool] | None = None  # (exit code, reason, /out seen full)

    def feed(self, data: bytes) -> bytes:
        if self.found:
            if self.result is None:
                self.rest += data[: self.MAX_REST]
                self._parse()
            return b""
        data = self.held + data
        self.held = b""
        i = data.find(self.mark)
        if i >= 0:
            self.found = True
            self.rest = data[i + len(self.mark):][: self.MAX_REST]
            self._parse()
            return data[:i]
        j = data.rfind(KEEPER_MARK, max(0, len(data) - len(self.mark) + 1))
        if j >= 0 and self.mark.startswith(data[j:]):
            self.held = data[j:]
            return data[:j]
        return data

    def flush(self) -> bytes:
        held, self.held = self.held, b""
        return held

    def _parse(self) -> None:
        m = re.match(rb"exit=(-?\d+) reason=([a-z]+) full=([01])\n", self.rest)
        if m:
            self.result = (int(m.group(1)), m.group(2).decode(), m.group(3) == b"1")
        elif b"\n" in self.rest or len(self.rest) >= self.MAX_REST:
            self.result = (None, "garbled", False)


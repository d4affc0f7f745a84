"""The allow-list's neighbours: which modules and calls start processes, open the network or import around
the allow-list, and ``classify()``, which names the finding code for one of them."""

from __future__ import annotations

# Importable whatever the benchmark's allow-list says: __future__ is a compiler
# directive, and prepare is the fixed runtime API every candidate needs.
ALWAYS_ALLOWED = frozenset({"__future__", "prepare"})
SUBPROCESS_MODULES = frozenset(
    {"subprocess", "multiprocessing", "ctypes", "pty", "_posixsubprocess", "pexpect", "cffi"}
)
SOCKET_MODULES = frozenset(
    {
        "socket", "urllib", "urllib3", "http", "requests", "httpx", "aiohttp", "ftplib",
        "smtplib", "telnetlib", "socketserver", "xmlrpc", "websocket", "websockets", "paramiko",
    }
)
# Modules whose members start processes: os and the platform modules behind it.
OS_MODULES = frozenset({"os", "posix", "nt"})
OS_PROCESS_FUNCS = frozenset(
    {"system", "popen", "fork", "forkpty", "kill", "killpg", "startfile", "posix_spawn",
     "posix_spawnp"}
)
SIGNAL_SETTERS = frozenset(
    {"signal", "alarm", "setitimer", "pthread_kill", "pthread_sigmask", "siginterrupt",
     "set_wakeup_fd", "raise_signal"}
)
DYNAMIC_BUILTINS = frozenset(
    {"builtins.__import__", "builtins.exec", "builtins.eval", "builtins.compile",
     "builtins.__dict__"}
)
DYNAMIC_MODULES = frozenset({"importlib", "imp", "runpy", "zipimport"})
# What reaches modules or builtins by a name computed at run time: warnings (dynamic-access).
DYNAMIC_ACCESS = frozenset(
    {"sys.modules", "sys.__dict__", "builtins", "builtins.globals", "builtins.locals"}
) | DYNAMIC_MODULES
# Calls whose result _qual() can name: getattr(os, "system") is os.system.
RESOLVING_CALLS = frozenset(
    {"builtins.getattr", "builtins.vars", "builtins.__import__", "importlib.import_module"}
)


def classify(qual: str) -> tuple[str, str] | None:
    """(code, message) when ``qual`` names a process, network or dynamic-import API."""
    parts = qual.split(".")
    top = parts[0]
    member = parts[1] if len(parts) > 1 else ""
    if qual in DYNAMIC_BUILTINS or (top in DYNAMIC_MODULES and member):
        shown = qual.removeprefix("builtins.")
        return ("dynamic-import",
                f"'{shown}' runs code or imports modules around the import allow-list; "
                "use plain import statements of allowed modules and write the code out")
    if (
        top in SUBPROCESS_MODULES
        or qual.startswith("torch.multiprocessing")
        or (top in OS_MODULES
            and (member in OS_PROCESS_FUNCS or member.startswith(("exec", "spawn"))))
        or (top == "signal" and member in SIGNAL_SETTERS)
    ):
        return ("subprocess",
                f"'{qual}' starts, signals or controls processes, which a run may not do; "
                "train in this one process and remove it")
    if top in SOCKET_MODULES:
        return ("socket",
                f"'{qual}' opens network connections, which a run may not do (it has no "
                "network); remove it and read data through prepare")
    return None

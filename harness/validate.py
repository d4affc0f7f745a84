"""Static checks of a candidate train.py before it runs.

``validate_file()`` reads a candidate and returns a ``ValidationReport`` whose
findings point at file:line:col, each saying what is wrong and what to do about
it. Errors make a candidate invalid; warnings do not.

These checks catch honest mistakes and the obvious ways around the rules (an
import allow-list, read-only fixed code and data, a harness-chosen seed); they
are advice, not a sandbox. Anything computed at run time (``getattr(os, "sys" + "tem")``)
gets past them: isolation is the backend's job (the container is the boundary).
The routes around the allow-list that can be seen but not followed (sys.modules,
the builtins module, globals(), an importlib module passed around) are warnings.

The file is read the way Python will read it: a PEP 263 coding cookie (or a BOM)
decides the decoding, so a cookie naming anything but UTF-8 is refused, since the
text Python would run (``# coding: utf-7`` turns ``+AAo-`` into a line break)
is not the text these checks would see.

Names are resolved through imports and simple aliases (``import os as o``,
``from os import system``, ``g = torch.Generator()``) with one flat scope for
the whole file: good enough for a single script.

Finding codes (errors unless stated):

    binary            NUL bytes: not a source file
    encoding          a coding cookie naming an encoding other than UTF-8 (or one
                      Python refuses, or a BOM with a non-UTF-8 cookie)
    not-utf8          not valid UTF-8
    too-large         over max_bytes
    syntax            does not parse
    too-complex       nested too deeply to check
    forbidden-import  a module off the allow-list, or a relative import
    dynamic-import    __import__, importlib, exec, eval, compile: around the allow-list
    subprocess        subprocess, multiprocessing, ctypes, pty, os.system/exec*/spawn*/fork/kill,
                      signal handlers
    socket            socket, urllib, http, requests and other network modules
    fixed-write       writing to fixed code or the data cache
    patch-fixed       patching prepare, the clock, sys.modules or HARNESS_* variables
    hardcoded-seed    (warning) a literal seed where prepare.SEED belongs
    dynamic-access    (warning) sys.modules, __builtins__ / the builtins module,
                      globals(), vars(sys), or a bare reference to an importlib-like
                      module: modules and builtins reached by name at run time;
                      left out on a line that already has an error
"""

from __future__ import annotations

import ast
import builtins
import codecs
import hashlib
import io
import re
import sys
import tokenize
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Collection, Iterator

from harness.sanitize import clean_text

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Finding",
    "ValidationReport",
    "validate_file",
    "validate_source",
]

DEFAULT_MAX_BYTES = 256 * 1024

ERROR = "error"
WARNING = "warning"

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
# A PEP 263 coding cookie (the expression Python's tokenizer uses).
CODING_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)
# Calls whose result _qual() can name: getattr(os, "system") is os.system.
RESOLVING_CALLS = frozenset(
    {"builtins.getattr", "builtins.vars", "builtins.__import__", "importlib.import_module"}
)

# Calls that take a path and write to it: qualified name -> (position, keyword)
# of each path argument that gets written.
WRITE_FUNCS: dict[str, tuple[tuple[int, str], ...]] = {
    **{f"os.{n}": ((0, "path"),) for n in ("remove", "unlink", "truncate", "chmod", "lchmod",
                                           "chown", "lchown", "utime", "mkfifo")},
    **{f"os.{n}": ((0, "path"),) for n in ("rmdir", "mkdir")},
    **{f"os.{n}": ((0, "name"),) for n in ("removedirs", "makedirs")},
    **{f"os.{n}": ((0, "src"), (1, "dst")) for n in ("rename", "renames", "replace")},
    **{f"os.{n}": ((1, "dst"),) for n in ("link", "symlink")},
    **{f"shutil.{n}": ((1, "dst"),) for n in ("copy", "copy2", "copyfile", "copytree",
                                              "copymode", "copystat")},
    "shutil.move": ((0, "src"), (1, "dst")),
    "shutil.rmtree": ((0, "path"),),
    "shutil.chown": ((0, "path"),),
    "shutil.make_archive": ((0, "base_name"),),
    "shutil.unpack_archive": ((1, "extract_dir"),),
    "torch.save": ((1, "f"),),
    **{f"numpy.{n}": ((0, "file"),) for n in ("save", "savez", "savez_compressed")},
    "numpy.savetxt": ((0, "fname"),),
}
# shutil functions that only read; every other one may write to any path it gets.
SHUTIL_READERS = frozenset({"disk_usage", "which", "get_terminal_size", "get_archive_formats",
                            "get_unpack_formats"})
OPEN_FUNCS = frozenset(
    {"builtins.open", "io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open"}
)
# pathlib.Path methods that change the path they are called on.
PATH_WRITE_METHODS = frozenset(
    {"write_text", "write_bytes", "touch", "unlink", "rmdir", "chmod", "lchmod", "mkdir",
     "symlink_to", "hardlink_to"}
)

# String literals in a path expression that point into harness-owned files.
FIXED_PATH_SUBSTRINGS = ("prepare.py", "HARNESS_DATA_DIR", "manifest.json", ".cache")
# "fixed" only as a whole path segment, so "fixed_lr.txt" in the run dir is fine.
FIXED_SEGMENT = re.compile(r"(?:^|[\\/])fixed(?:[\\/]|$)")
# Where the docker backend mounts the data cache (harness/container_spec.py).
DATA_MOUNT = re.compile(r"^/data(?:/|$)")
FIXED_REFS = frozenset({"prepare.__file__", "prepare.DATA_DIR", "prepare.__spec__"})

KEYWORD_ONLY = sys.maxsize  # the "position" of a keyword-only parameter

# Passes over the assignments when following aliases and tainted names; enough
# for any chain written top to bottom, and bounded whatever the file does.
MAX_PASSES = 10

CLOCK_MODULE = "time"
FIXED_MODULE = "prepare"
DICT_MUTATORS = frozenset(
    {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
)

SEED_FUNCS = frozenset(
    {"random.seed", "random.Random", "numpy.random.seed", "numpy.random.default_rng",
     "numpy.random.RandomState", "numpy.random.SeedSequence", "numpy.random.PCG64",
     "numpy.random.MT19937", "numpy.random.Philox", "numpy.random.SFC64"}
)
# Nodes a seed argument may contain and still be a constant.
LITERAL_NODES = (ast.Constant, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List,
                 ast.unaryop, ast.operator, ast.expr_context)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int  # 1-based
    col: int  # 1-based
    severity: str  # "error" | "warning"
    code: str  # short stable id, e.g. "forbidden-import"
    message: str  # what is wrong and what to do about it

    def format(self) -> str:
        """One line for a terminal: the path and message are the submitter's text, cleaned of control
        characters (harness.sanitize); to_dict() keeps them exact."""
        return clean_text(f"{self.path}:{self.line}:{self.col}: {self.severity} {self.code}: {self.message}")


@dataclass
class ValidationReport:
    path: str
    sha256: str | None
    size: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "ok": self.ok,
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }


def validate_file(
    path: str | Path, allowed_imports: Collection[str], max_bytes: int = DEFAULT_MAX_BYTES
) -> ValidationReport:
    """Validate the file at ``path``; a missing or unreadable file raises OSError."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
        if len(data) <= max_bytes:
            return validate_source(data, str(path), allowed_imports, max_bytes)
        # Too large: hash the rest without holding it all in memory.
        digest = hashlib.sha256(data)
        size = len(data)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    finding = _too_large(str(path), size, max_bytes)
    return ValidationReport(str(path), digest.hexdigest(), size, [finding])


def validate_source(
    data: bytes, path: str, allowed_imports: Collection[str], max_bytes: int = DEFAULT_MAX_BYTES
) -> ValidationReport:
    """Validate candidate source ``data``; ``path`` is only used in the findings."""
    if isinstance(allowed_imports, str):
        raise TypeError("allowed_imports must be a collection of module names, not a str")
    report = ValidationReport(path, hashlib.sha256(data).hexdigest(), len(data))
    report.findings = _check_bytes(data, path, set(allowed_imports), max_bytes)
    return report


def _check_bytes(data: bytes, path: str, allowed: set[str], max_bytes: int) -> list[Finding]:
    # Each of these makes the later checks meaningless, so stop at the first.
    if len(data) > max_bytes:
        return [_too_large(path, len(data), max_bytes)]
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _byte_position(data, nul)
        return [Finding(path, line, col, ERROR, "binary",
                        f"NUL byte at offset {nul}: this is a binary file, not Python source; "
                        "submit train.py as UTF-8 text")]
    cookie = _check_encoding(data, path)
    if cookie is not None:
        return [cookie]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _byte_position(data, e.start)
        return [Finding(path, line, col, ERROR, "not-utf8",
                        f"byte 0x{data[e.start]:02x} is not valid UTF-8; save train.py as UTF-8")]
    text = text.removeprefix("\ufeff")
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like warn on stderr; not our business.
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=path)
    except SyntaxError as e:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return [Finding(path, e.lineno or 1, e.offset or 1, ERROR, "syntax",
                        f"{e.msg}; fix it so the file parses as Python {version}")]
    except (RecursionError, MemoryError, ValueError):
        return [Finding(path, 1, 1, ERROR, "syntax",
                        "the file is nested too deeply to parse; simplify its expressions")]
    try:
        return _Checker(tree, path, allowed).run()
    except RecursionError:
        return [Finding(path, 1, 1, ERROR, "too-complex",
                        "an expression is nested too deeply to check; simplify it")]


def _check_encoding(data: bytes, path: str) -> Finding | None:
    """An error unless Python would decode ``data`` as UTF-8 (its default, a BOM, or a utf-8 cookie).

    Python reads a source file with universal newlines before it looks for the cookie on line 1 or 2,
    so a lone CR separates lines here too (tokenize.detect_encoding alone would miss ``\r# coding: ...``).
    """
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    first_two = text.split(b"\n", 2)[:2]
    line = next((i for i, ln in enumerate(first_two, 1) if CODING_COOKIE.match(ln)), 1)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(text).readline)
    except SyntaxError as e:
        if "invalid or missing encoding declaration" in str(e) and not any(map(CODING_COOKIE.match, first_two)):
            return None  # plain bytes that are not UTF-8: the not-utf8 check names the byte
        what = ("a UTF-8 BOM together with a coding cookie for another encoding"
                if data.startswith(codecs.BOM_UTF8) else f"{e.msg or e}")
        return Finding(path, line, 1, ERROR, "encoding",
                       f"{what}: Python refuses to run this file; remove the coding cookie "
                       "and save train.py as UTF-8")
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):  # utf8, UTF_8, utf-8-unix, ...
        return None
    return Finding(path, line, 1, ERROR, "encoding",
                   f"the coding cookie declares {encoding!r}: Python would decode this file as {encoding}, "
                   "not UTF-8, so what runs is not what is checked; delete the cookie (or declare "
                   "utf-8) and save train.py as UTF-8")


def _too_large(path: str, size: int, max_bytes: int) -> Finding:
    return Finding(path, 1, 1, ERROR, "too-large",
                   f"file is {size:,} bytes, over the {max_bytes:,}-byte limit; shrink train.py "
                   "(no embedded data or generated tables)")


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and character column of byte ``offset``, whose prefix is valid UTF-8."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return data.count(b"\n", 0, offset) + 1, col


class _Checker:
    """One pass over one parsed file; holds the name bindings it resolves with."""

    def __init__(self, tree: ast.Module, path: str, allowed: set[str]):
        self.tree = tree
        self.path = path
        self.allowed = allowed | ALWAYS_ALLOWED
        self.parents: dict[ast.AST, ast.AST] = {}
        self.imports: dict[str, str] = {}  # local name -> qualified name it was imported as
        self.aliases: dict[str, str] = {}  # local name -> qualified name of its only value
        self.locals: set[str] = set()  # names bound in the file, which shadow builtins
        self.tainted: dict[str, str] = {}  # name -> what in its value points at a fixed path
        # _qual() results; without it long attribute chains are quadratic. Cleared
        # whenever the aliases it depends on change.
        self.memo: dict[ast.AST, str | None] = {}
        self.reasons: dict[ast.AST, tuple[str, str | None] | None] = {}  # _fixed_path(), likewise
        self.writers: dict[str, tuple[tuple[int, str], ...]] = {}  # like WRITE_FUNCS
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        self._collect_bindings()
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._check_import(node)
            if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
                self._check_reference(node)
            if isinstance(node, ast.Call):
                self._check_call(node)
            if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)) and isinstance(
                node.ctx, (ast.Store, ast.Del)
            ):
                self._check_store(node)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._check_rebinding(node, node.name)
        error_lines = {f.line for f in self.findings if f.severity == ERROR}
        unique = {(f.line, f.col, f.code, f.message): f for f in self.findings
                  if not (f.code == "dynamic-access" and f.line in error_lines)}
        return sorted(unique.values(), key=lambda f: (f.line, f.col, f.code))

    def _add(self, node: ast.AST, severity: str, code: str, message: str) -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + 1
        self.findings.append(Finding(self.path, line, col, severity, code, message))

    # -- name resolution ------------------------------------------------------

    def _collect_bindings(self) -> None:
        """Fill imports, locals, aliases, tainted names and writers before any check."""
        assigned: dict[str, list[ast.expr | None]] = {}
        taint_sources: list[tuple[list[str], ast.expr]] = []
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Import):
                for a in node.names:
                    # "import a.b" binds "a"; "import a.b as c" binds c to a.b.
                    local = a.asname or a.name.split(".")[0]
                    self.imports[local] = a.name if a.asname else local
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    if a.name != "*":
                        self.imports[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.locals.add(node.name)
            elif isinstance(node, ast.arg):
                self.locals.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.locals.add(node.id)
                assigned.setdefault(node.id, []).append(self._assigned_value(node))
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
                if node.value is not None:
                    taint_sources.append((names, node.value))
        # A name is an alias only if every binding gives it the same resolvable
        # value; iterate because aliases can chain (a = os; b = a).
        for _ in range(MAX_PASSES):
            new = {}
            for name, values in assigned.items():
                quals = {self._qual(v) if v is not None else None for v in values}
                if len(quals) == 1 and None not in quals and name not in self.imports:
                    new[name] = quals.pop()
            if new == self.aliases:
                break
            self.aliases = new
            self.memo.clear()
        for _ in range(MAX_PASSES):
            changed = False
            self.reasons.clear()  # cached before this pass's new taints
            for names, value in taint_sources:
                found = self._fixed_path(value)
                for name in names:
                    if found and name not in self.tainted:
                        self.tainted[name] = found[0]
                        changed = True
            if not changed:
                break
        self.reasons.clear()
        self._collect_writers()

    def _collect_writers(self) -> None:
        """Find this file's functions that write to a path they are given.

        Then ``overwrite("fixed/prepare.py")`` is caught where ``def overwrite(path)``
        opens ``path`` for writing; iterated so helpers of helpers count too.
        """
        functions = [n for n in ast.walk(self.tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for _ in range(MAX_PASSES):
            changed = False
            for fn in functions:
                written = {
                    n.id
                    for call in ast.walk(fn) if isinstance(call, ast.Call)
                    for target in self._write_targets(call)
                    for n in ast.walk(target) if isinstance(n, ast.Name)
                }
                positional = [a.arg for a in fn.args.posonlyargs + fn.args.args]
                slots = tuple((i, p) for i, p in enumerate(positional) if p in written)
                slots += tuple((KEYWORD_ONLY, a.arg) for a in fn.args.kwonlyargs
                               if a.arg in written)
                if slots and self.writers.get(fn.name) != slots:
                    self.writers[fn.name] = slots
                    changed = True
            if not changed:
                break

    def _assigned_value(self, name: ast.Name) -> ast.expr | None:
        """The value bound to ``name`` if it is a plain ``name = value``."""
        parent = self.parents.get(name)
        if isinstance(parent, ast.Assign) and name in parent.targets:
            return parent.value
        if isinstance(parent, (ast.AnnAssign, ast.NamedExpr)) and parent.target is name:
            return parent.value
        return None

    def _qual(self, node: ast.AST) -> str | None:
        """Dotted name an expression refers to, e.g. "os.system" for ``o.system``.

        A call adds "()": ``torch.Generator().manual_seed`` -> "torch.Generator().manual_seed".
        """
        if node not in self.memo:
            self.memo[node] = self._resolve(node)
        return self.memo[node]

    def _resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.imports:
                return self.imports[node.id]
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id == "__builtins__":
                return "builtins"
            if node.id not in self.locals and hasattr(builtins, node.id):
                return f"builtins.{node.id}"
            return None
        if isinstance(node, ast.Attribute):
            base = self._qual(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript):
            # sys.modules["subprocess"] is the subprocess module.
            key = _str_const(node.slice)
            if key and self._qual(node.value) == "sys.modules":
                return key
            return None
        if isinstance(node, ast.Call):
            func = self._qual(node.func)
            if func is None:
                return None
            first = node.args[0] if node.args else None
            if func == "builtins.getattr" and len(node.args) >= 2 and _str_const(node.args[1]):
                base = self._qual(node.args[0])
                return f"{base}.{_str_const(node.args[1])}" if base else None
            if func == "builtins.vars" and first is not None:
                base = self._qual(first)
                return f"{base}.__dict__" if base else None
            if func == "importlib.import_module" and _str_const(first):
                return _str_const(first)
            if func == "builtins.__import__" and _str_const(first):
                return _str_const(first).split(".")[0]
            return f"{func}()"
        return None

    # -- imports and references -----------------------------------------------

    def _check_import(self, node: ast.Import | ast.ImportFrom) -> None:
        allowed = ", ".join(sorted(self.allowed - {"__future__"}))
        if isinstance(node, ast.ImportFrom) and node.level:
            dots = "." * node.level
            self._add(node, ERROR, "forbidden-import",
                      f"relative import 'from {dots}{node.module or ''} import ...': train.py runs "
                      "as a single script with no package around it; copy the code into train.py")
            return
        if isinstance(node, ast.ImportFrom):
            modules = [(node, node.module or "")]
            members = [(node, f"{node.module}.{a.name}") for a in node.names if a.name != "*"]
        else:
            modules = [(a if hasattr(a, "lineno") else node, a.name) for a in node.names]
            members = modules
        for where, module in modules:
            if not self._import_allowed(module):
                self._add(where, ERROR, "forbidden-import",
                          f"import '{module}' is not on this benchmark's allow-list; "
                          f"allowed: {allowed}; remove it or use an allowed module")
        for where, qual in members:
            problem = _classify(qual)
            if problem:
                self._add(where, ERROR, *problem)
            elif qual in DYNAMIC_ACCESS and isinstance(node, ast.ImportFrom):  # from sys import modules
                self._add(where, WARNING, "dynamic-access",
                          f"'{qual}' reaches modules by a name chosen at run time, a route around the "
                          "import allow-list that these checks cannot follow; use plain imports of allowed "
                          "modules (the container, not this check, enforces the rules)")

    def _import_allowed(self, module: str) -> bool:
        parts = module.split(".")
        return any(".".join(parts[: i + 1]) in self.allowed for i in range(len(parts)))

    def _check_reference(self, node: ast.AST) -> None:
        """Flag uses of process, network and dynamic-import APIs, however aliased."""
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            if not isinstance(node.ctx, ast.Load):
                return
        elif self._qual(node.func) not in RESOLVING_CALLS:
            return
        qual = self._qual(node)
        if qual is None or "()" in qual:
            return
        problem = _classify(qual)
        if problem is None:
            if qual in DYNAMIC_ACCESS:
                self._add(node, WARNING, "dynamic-access",
                          f"'{_short(node)}' reaches modules or builtins by a name chosen at run time, "
                          "a route around the import allow-list that these checks cannot follow; use plain "
                          "imports of allowed modules (the container, not this check, enforces the rules)")
            return
        # Report "subprocess.run" once, not again for its "subprocess" part.
        parent = self.parents.get(node)
        if _is_base_of(parent, node):
            outer = self._qual(parent)
            if outer and "()" not in outer and (_classify(outer) or (None,))[0] == problem[0]:
                return
        self._add(node, ERROR, *problem)

    # -- calls -----------------------------------------------------------------

    def _check_call(self, call: ast.Call) -> None:
        func = self._qual(call.func)
        self._check_write(call)
        self._check_seed(call, func)
        self._check_patch_call(call, func)

    def _check_write(self, call: ast.Call) -> None:
        """Writes whose path points at fixed code or the data cache."""
        for target in self._write_targets(call):
            reason = self._fixed_path_reason(target)
            if reason:
                self._add(call, ERROR, "fixed-write",
                          f"'{_short(call.func)}(...)' writes to a path built from {reason}, "
                          "which belongs to the harness (fixed code and the data cache are "
                          "read-only); write only under HARNESS_OUT_DIR")
                return

    def _write_targets(self, call: ast.Call) -> list[ast.expr]:
        """The path arguments ``call`` writes to: open(p, "w"), os.remove(p), p.write_text()."""
        func = self._qual(call.func)
        targets: list[ast.expr] = []
        receiver = self._qual(call.func.value) if isinstance(call.func, ast.Attribute) else None
        module_style = receiver is not None and "()" not in receiver
        if func in OPEN_FUNCS or (
            isinstance(call.func, ast.Attribute) and call.func.attr == "open" and module_style
            and func != "os.open"
        ):
            mode = _arg(call, 1, "mode")
            if _may_write(mode):
                targets = [a for a in [_arg(call, 0, "file") or _arg(call, 0, "filename")] if a]
        elif func == "os.open":
            flags = _arg(call, 1, "flags")
            if flags is not None and self._qual(flags) != "os.O_RDONLY":
                targets = [a for a in [_arg(call, 0, "path")] if a]
        elif func in WRITE_FUNCS:
            targets = [a for i, kw in WRITE_FUNCS[func] if (a := _arg(call, i, kw)) is not None]
        elif func and func.startswith("shutil.") and func[len("shutil."):] not in SHUTIL_READERS:
            targets = [*call.args, *(k.value for k in call.keywords)]
        elif isinstance(call.func, ast.Attribute) and not module_style:
            method = call.func.attr
            if method in PATH_WRITE_METHODS:
                targets = [call.func.value]
            elif method == "open" and _may_write(_arg(call, 0, "mode")):
                targets = [call.func.value]
            elif method in ("rename", "replace") and len(call.args) == 1 and not call.keywords:
                targets = [call.func.value, call.args[0]]  # Path.rename(target), not str.replace
            elif method == "tofile" and call.args:
                targets = [call.args[0]]
        elif isinstance(call.func, ast.Name) and call.func.id in self.writers:
            slots = self.writers[call.func.id]
            targets = [a for i, kw in slots if (a := _arg(call, i, kw)) is not None]
        return targets

    def _fixed_path_reason(self, expr: ast.AST) -> str | None:
        """Why ``expr`` looks like a path into fixed code or data, or None."""
        found = self._fixed_path(expr)
        if found is None:
            return None
        what, via = found
        return f"{via} (set from {what})" if via else what

    def _fixed_path(self, expr: ast.AST) -> tuple[str, str | None] | None:
        """(what points at a fixed path, the tainted name it came through) or None."""
        if expr not in self.reasons:
            found = self._own_fixed_path(expr)
            for child in ast.iter_child_nodes(expr):
                if found:
                    break
                found = self._fixed_path(child)
            self.reasons[expr] = found
        return self.reasons[expr]

    def _own_fixed_path(self, node: ast.AST) -> tuple[str, str | None] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if (any(s in text for s in FIXED_PATH_SUBSTRINGS) or FIXED_SEGMENT.search(text)
                    or DATA_MOUNT.match(text)):
                return repr(text if len(text) <= 60 else text[:57] + "..."), None
        elif isinstance(node, (ast.Name, ast.Attribute)):
            qual = self._qual(node)
            if qual in FIXED_REFS:
                return qual, None
            if isinstance(node, ast.Name) and node.id in self.tainted:
                return self.tainted[node.id], node.id
        return None

    def _check_seed(self, call: ast.Call, func: str | None) -> None:
        if func is None:
            return
        is_seed = func in SEED_FUNCS or (
            func.startswith("torch.") and func.endswith((".manual_seed", ".manual_seed_all"))
        )
        if not is_seed:
            return
        seed = call.args[0] if call.args else _arg(call, 0, "seed") or _arg(call, 0, "a")
        if seed is not None and all(isinstance(n, LITERAL_NODES) for n in ast.walk(seed)):
            self._add(call, WARNING, "hardcoded-seed",
                      f"'{_short(call.func)}({_short(seed)})' hard-codes the seed; "
                      "the harness chooses the seed: use prepare.SEED")

    def _check_patch_call(self, call: ast.Call, func: str | None) -> None:
        first = call.args[0] if call.args else None
        if func in ("builtins.setattr", "builtins.delattr") and first is not None:
            what = self._patched(first)
            if what:
                self._add(call, ERROR, "patch-fixed",
                          f"'{_short(call.func)}({_short(first)}, ...)' {what}; remove it")
        elif func in ("os.putenv", "os.unsetenv") and _harness_key(first):
            self._add(call, ERROR, "patch-fixed", _env_message(_harness_key(first)))
        elif isinstance(call.func, ast.Attribute) and call.func.attr in DICT_MUTATORS:
            receiver = self._qual(call.func.value)
            if receiver == "os.environ":
                keys = [first] if call.func.attr != "update" else _dict_keys(call)
                key = next((k for k in map(_harness_key, keys) if k), None)
                if key:
                    self._add(call, ERROR, "patch-fixed", _env_message(key))
            elif receiver == "sys.modules":
                self._add(call, ERROR, "patch-fixed", _SYS_MODULES_MESSAGE)
            elif receiver in (f"{FIXED_MODULE}.__dict__", f"{CLOCK_MODULE}.__dict__"):
                self._add(call, ERROR, "patch-fixed",
                          f"'{_short(call.func)}(...)' {self._patched(call.func.value)}; remove it")

    # -- assignments -----------------------------------------------------------

    def _check_store(self, node: ast.Name | ast.Attribute | ast.Subscript) -> None:
        verb = "deleting" if isinstance(node.ctx, ast.Del) else "assigning to"
        if isinstance(node, ast.Name):
            self._check_rebinding(node, node.id)
        elif isinstance(node, ast.Attribute):
            what = self._patched(node.value)
            if what:
                self._add(node, ERROR, "patch-fixed", f"{verb} '{_short(node)}' {what}; remove it")
        else:
            base = self._qual(node.value)
            if base == "sys.modules":
                self._add(node, ERROR, "patch-fixed", _SYS_MODULES_MESSAGE)
            elif base == "os.environ" and _harness_key(node.slice):
                self._add(node, ERROR, "patch-fixed", _env_message(_harness_key(node.slice)))
            elif self._patched(node.value):
                self._add(node, ERROR, "patch-fixed",
                          f"{verb} '{_short(node)}' {self._patched(node.value)}; remove it")

    def _check_rebinding(self, node: ast.AST, name: str) -> None:
        """Rebinding a name imported from prepare or time swaps it out for this file."""
        qual = self.imports.get(name)
        if qual is None:
            return
        if qual == FIXED_MODULE or qual.startswith(f"{FIXED_MODULE}."):
            self._add(node, ERROR, "patch-fixed",
                      f"rebinding '{name}' (imported as {qual}) replaces the fixed module's "
                      "value in train.py; use it as is and pick another name for your own")
        elif qual.startswith(f"{CLOCK_MODULE}."):
            self._add(node, ERROR, "patch-fixed",
                      f"rebinding '{name}' (imported as {qual}) replaces the clock train.py "
                      "times its budget with; use it as is and pick another name for your own")

    def _patched(self, target: ast.AST) -> str | None:
        """What changing an attribute of ``target`` patches, or None."""
        qual = self._qual(target)
        if qual is None or "()" in qual:
            return None  # objects that prepare's functions return are the candidate's own
        if qual == FIXED_MODULE or qual.startswith(f"{FIXED_MODULE}."):
            return ("patches the fixed module prepare, whose data, evaluation and budget "
                    "must run unmodified")
        if qual in (CLOCK_MODULE, f"{CLOCK_MODULE}.__dict__"):
            return "patches the clock the time budget is measured with"
        return None


_SYS_MODULES_MESSAGE = (
    "changing sys.modules can swap the fixed module or the clock for another; remove it"
)


def _env_message(key: str) -> str:
    return (f"changing {key} changes what the fixed module reads (data, budget, seed); "
            "the harness sets HARNESS_* variables; remove it")


def _classify(qual: str) -> tuple[str, str] | None:
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


def _is_base_of(parent: ast.AST | None, node: ast.AST) -> bool:
    """Whether ``parent`` names a member of what ``node`` names (o.system of o)."""
    if isinstance(parent, ast.Attribute):
        return parent.value is node
    if isinstance(parent, ast.Call):
        return bool(parent.args) and parent.args[0] is node
    return False


def _str_const(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _arg(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    """The argument at ``position`` or named ``keyword``; positions after *args are unknown."""
    before = call.args[: position + 1]
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in before):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _may_write(mode: ast.expr | None) -> bool:
    """Whether an open() mode can write; a mode we cannot read counts as writing."""
    if mode is None:
        return False
    text = _str_const(mode)
    return text is None or any(c in text for c in "wax+")


def _harness_key(node: ast.AST | None) -> str | None:
    key = _str_const(node)
    return key if key and key.startswith("HARNESS_") else None


def _dict_keys(call: ast.Call) -> Iterator[ast.AST | None]:
    for arg in call.args:
        if isinstance(arg, ast.Dict):
            yield from arg.keys
    for kw in call.keywords:
        if kw.arg:
            yield ast.Constant(kw.arg)


def _short(node: ast.AST) -> str:
    """Source text of an expression, cut short so messages stay readable."""
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."

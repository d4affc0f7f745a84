"""fixed-write: calls that write to a path built from fixed code or the data cache."""

from __future__ import annotations

import ast
import re

from harness.validate.astutil import call_arg, short, str_const
from harness.validate.findings import ERROR

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


class WriteChecks:
    """What a call writes to, and whether that path points at fixed code or data. Mixed into
    :class:`~harness.validate.checker.Checker`."""

    def _check_write(self, call: ast.Call) -> None:
        """Writes whose path points at fixed code or the data cache."""
        for target in self._write_targets(call):
            reason = self._fixed_path_reason(target)
            if reason:
                self._add(call, ERROR, "fixed-write",
                          f"'{short(call.func)}(...)' writes to a path built from {reason}, "
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
            mode = call_arg(call, 1, "mode")
            if _may_write(mode):
                targets = [a for a in [call_arg(call, 0, "file") or call_arg(call, 0, "filename")] if a]
        elif func == "os.open":
            flags = call_arg(call, 1, "flags")
            if flags is not None and self._qual(flags) != "os.O_RDONLY":
                targets = [a for a in [call_arg(call, 0, "path")] if a]
        elif func in WRITE_FUNCS:
            targets = [a for i, kw in WRITE_FUNCS[func] if (a := call_arg(call, i, kw)) is not None]
        elif func and func.startswith("shutil.") and func[len("shutil."):] not in SHUTIL_READERS:
            targets = [*call.args, *(k.value for k in call.keywords)]
        elif isinstance(call.func, ast.Attribute) and not module_style:
            method = call.func.attr
            if method in PATH_WRITE_METHODS:
                targets = [call.func.value]
            elif method == "open" and _may_write(call_arg(call, 0, "mode")):
                targets = [call.func.value]
            elif method in ("rename", "replace") and len(call.args) == 1 and not call.keywords:
                targets = [call.func.value, call.args[0]]  # Path.rename(target), not str.replace
            elif method == "tofile" and call.args:
                targets = [call.args[0]]
        elif isinstance(call.func, ast.Name) and call.func.id in self.writers:
            slots = self.writers[call.func.id]
            targets = [a for i, kw in slots if (a := call_arg(call, i, kw)) is not None]
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


def _may_write(mode: ast.expr | None) -> bool:
    """Whether an open() mode can write; a mode we cannot read counts as writing."""
    if mode is None:
        return False
    text = str_const(mode)
    return text is None or any(c in text for c in "wax+")

"""Reading a candidate the way Python will: size, NUL bytes, the PEP 263 coding cookie, UTF-8, the parse;
then the checks of :class:`~harness.validate.checker.Checker` on the tree."""

from __future__ import annotations

import ast
import codecs
import hashlib
import io
import re
import sys
import tokenize
import warnings
from pathlib import Path
from typing import Collection

from harness.validate.checker import Checker
from harness.validate.findings import ERROR, Finding, ValidationReport

DEFAULT_MAX_BYTES = 256 * 1024
# A PEP 263 coding cookie (the expression Python's tokenizer uses).
CODING_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)


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
        return Checker(tree, path, allowed).run()
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

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

The package, by job:

    findings.py    Finding and ValidationReport
    reading.py     validate_file / validate_source: size, NUL bytes, the coding cookie, UTF-8, the parse
    checker.py     Checker: one walk over the tree, handing each node to the checks below
    names.py       name resolution (imports, aliases, tainted names, writer functions)
    rules.py       which modules and calls are process, network or dynamic-import APIs (classify)
    imports.py     the import allow-list check
    references.py  process / network / dynamic-import references and the dynamic-access warnings
    writes.py      fixed-write
    patches.py     patch-fixed and hardcoded-seed
"""

from __future__ import annotations

from harness.validate.findings import Finding, ValidationReport
from harness.validate.reading import DEFAULT_MAX_BYTES, validate_file, validate_source

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Finding",
    "ValidationReport",
    "validate_file",
    "validate_source",
]

"""The checks of one parsed file: one walk over the tree, each node handed to the checks that concern it.

The checks live with their rules (``imports``, ``references``, ``writes``, ``patches``) and the name
resolution they share in ``names``; :class:`Checker` mixes them together and holds the state.
"""

from __future__ import annotations

import ast

from harness.validate.findings import ERROR, Finding
from harness.validate.imports import ImportChecks
from harness.validate.names import NameResolution
from harness.validate.patches import PatchChecks
from harness.validate.references import ReferenceChecks
from harness.validate.rules import ALWAYS_ALLOWED
from harness.validate.writes import WriteChecks


class Checker(NameResolution, ImportChecks, ReferenceChecks, WriteChecks, PatchChecks):
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

    def _check_call(self, call: ast.Call) -> None:
        func = self._qual(call.func)
        self._check_write(call)
        self._check_seed(call, func)
        self._check_patch_call(call, func)

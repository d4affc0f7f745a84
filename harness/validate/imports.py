"""The import allow-list check: every ``import`` and ``from ... import`` against the benchmark's list."""

from __future__ import annotations

import ast

from harness.validate.findings import ERROR, WARNING
from harness.validate.rules import DYNAMIC_ACCESS, classify


class ImportChecks:
    """forbidden-import (and the process, network or dynamic-import members an import names). Mixed into
    :class:`~harness.validate.checker.Checker`."""

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
            problem = classify(qual)
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

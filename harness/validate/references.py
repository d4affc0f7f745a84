"""Uses of process, network and dynamic-import APIs however aliased (errors), and the dynamic-access
warnings: modules and builtins reached by a name chosen at run time (``sys.modules``, ``__builtins__``,
``globals()``, an importlib-like module)."""

from __future__ import annotations

import ast

from harness.validate.astutil import is_base_of, short
from harness.validate.findings import ERROR, WARNING
from harness.validate.rules import DYNAMIC_ACCESS, RESOLVING_CALLS, classify


class ReferenceChecks:
    """subprocess, socket, dynamic-import and dynamic-access findings for one reference. Mixed into
    :class:`~harness.validate.checker.Checker`."""

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
        problem = classify(qual)
        if problem is None:
            if qual in DYNAMIC_ACCESS:
                self._add(node, WARNING, "dynamic-access",
                          f"'{short(node)}' reaches modules or builtins by a name chosen at run time, "
                          "a route around the import allow-list that these checks cannot follow; use plain "
                          "imports of allowed modules (the container, not this check, enforces the rules)")
            return
        # Report "subprocess.run" once, not again for its "subprocess" part.
        parent = self.parents.get(node)
        if is_base_of(parent, node):
            outer = self._qual(parent)
            if outer and "()" not in outer and (classify(outer) or (None,))[0] == problem[0]:
                return
        self._add(node, ERROR, *problem)

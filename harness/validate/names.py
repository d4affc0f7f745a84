"""Name resolution for the checks: what each name and expression of the file refers to (imports, simple
aliases, names holding a fixed path, the file's own functions that write to a path they are given).

One flat scope for the whole file: good enough for a single script. Mixed into
:class:`~harness.validate.checker.Checker`, which holds the state.
"""

from __future__ import annotations

import ast
import builtins
import sys

from harness.validate.astutil import str_const

KEYWORD_ONLY = sys.maxsize  # the "position" of a keyword-only parameter

# Passes over the assignments when following aliases and tainted names; enough
# for any chain written top to bottom, and bounded whatever the file does.
MAX_PASSES = 10


class NameResolution:
    """Fills imports, locals, aliases, tainted names and writers; ``_qual()`` names an expression."""

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
            key = str_const(node.slice)
            if key and self._qual(node.value) == "sys.modules":
                return key
            return None
        if isinstance(node, ast.Call):
            func = self._qual(node.func)
            if func is None:
                return None
            first = node.args[0] if node.args else None
            if func == "builtins.getattr" and len(node.args) >= 2 and str_const(node.args[1]):
                base = self._qual(node.args[0])
                return f"{base}.{str_const(node.args[1])}" if base else None
            if func == "builtins.vars" and first is not None:
                base = self._qual(first)
                return f"{base}.__dict__" if base else None
            if func == "importlib.import_module" and str_const(first):
                return str_const(first)
            if func == "builtins.__import__" and str_const(first):
                return str_const(first).split(".")[0]
            return f"{func}()"
        return None

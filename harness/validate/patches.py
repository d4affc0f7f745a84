"""patch-fixed and hardcoded-seed: changing prepare, the clock, sys.modules or HARNESS_* variables, and
seeding with a literal where the harness's seed belongs."""

from __future__ import annotations

import ast
from typing import Iterator

from harness.validate.astutil import call_arg, short, str_const
from harness.validate.findings import ERROR, WARNING

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


class PatchChecks:
    """Patching the fixed module, the clock, sys.modules or the environment; literal seeds. Mixed into
    :class:`~harness.validate.checker.Checker`."""

    def _check_seed(self, call: ast.Call, func: str | None) -> None:
        if func is None:
            return
        is_seed = func in SEED_FUNCS or (
            func.startswith("torch.") and func.endswith((".manual_seed", ".manual_seed_all"))
        )
        if not is_seed:
            return
        seed = call.args[0] if call.args else call_arg(call, 0, "seed") or call_arg(call, 0, "a")
        if seed is not None and all(isinstance(n, LITERAL_NODES) for n in ast.walk(seed)):
            self._add(call, WARNING, "hardcoded-seed",
                      f"'{short(call.func)}({short(seed)})' hard-codes the seed; "
                      "the harness chooses the seed: use prepare.SEED")

    def _check_patch_call(self, call: ast.Call, func: str | None) -> None:
        first = call.args[0] if call.args else None
        if func in ("builtins.setattr", "builtins.delattr") and first is not None:
            what = self._patched(first)
            if what:
                self._add(call, ERROR, "patch-fixed",
                          f"'{short(call.func)}({short(first)}, ...)' {what}; remove it")
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
                          f"'{short(call.func)}(...)' {self._patched(call.func.value)}; remove it")

    def _check_store(self, node: ast.Name | ast.Attribute | ast.Subscript) -> None:
        verb = "deleting" if isinstance(node.ctx, ast.Del) else "assigning to"
        if isinstance(node, ast.Name):
            self._check_rebinding(node, node.id)
        elif isinstance(node, ast.Attribute):
            what = self._patched(node.value)
            if what:
                self._add(node, ERROR, "patch-fixed", f"{verb} '{short(node)}' {what}; remove it")
        else:
            base = self._qual(node.value)
            if base == "sys.modules":
                self._add(node, ERROR, "patch-fixed", _SYS_MODULES_MESSAGE)
            elif base == "os.environ" and _harness_key(node.slice):
                self._add(node, ERROR, "patch-fixed", _env_message(_harness_key(node.slice)))
            elif self._patched(node.value):
                self._add(node, ERROR, "patch-fixed",
                          f"{verb} '{short(node)}' {self._patched(node.value)}; remove it")

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


def _harness_key(node: ast.AST | None) -> str | None:
    key = str_const(node)
    return key if key and key.startswith("HARNESS_") else None


def _dict_keys(call: ast.Call) -> Iterator[ast.AST | None]:
    for arg in call.args:
        if isinstance(arg, ast.Dict):
            yield from arg.keys
    for kw in call.keywords:
        if kw.arg:
            yield ast.Constant(kw.arg)

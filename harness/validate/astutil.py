"""Small helpers over ``ast`` nodes shared by the checks: arguments, string constants, short source text."""

from __future__ import annotations

import ast


def is_base_of(parent: ast.AST | None, node: ast.AST) -> bool:
    """Whether ``parent`` names a member of what ``node`` names (o.system of o)."""
    if isinstance(parent, ast.Attribute):
        return parent.value is node
    if isinstance(parent, ast.Call):
        return bool(parent.args) and parent.args[0] is node
    return False


def str_const(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def call_arg(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    """The argument at ``position`` or named ``keyword``; positions after *args are unknown."""
    before = call.args[: position + 1]
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in before):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def short(node: ast.AST) -> str:
    """Source text of an expression, cut short so messages stay readable."""
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."

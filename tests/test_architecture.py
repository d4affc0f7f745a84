"""The package's shape, read from the source with ``ast`` (nothing under harness/ is imported or run).

- no import cycle among harness modules, counting imports inside functions too
- no module over MAX_LINES lines
- the Docker SDK is imported only by the docker backend (harness/backends/)
- one module-level function named ``decide`` at most, so a name says which decision it is
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"
REPO = HARNESS.parent
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    """harness module name -> its file."""
    return {_module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """Import nodes under ``if TYPE_CHECKING:``: never executed, so no edge."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    skipped.update(ast.walk(stmt))
    return skipped


def _imported(module: str, path: Path, tree: ast.Module, known: set[str]) -> list[tuple[str, int]]:
    """(harness module imported, line) for every import statement anywhere in the file, functions included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    out = []
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # from pkg import sub: the submodule when it is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            # import a.b.c names a.b.c; the nearest module we know of is what gets executed for it
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.append((target, node.lineno))
    return out


def _import_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    sources = _sources()
    known = set(sources)
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in sources.items():
        for target, line in _imported(module, path, _tree(path), known):
            graph[module].setdefault(target, line)
    return graph, sources


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # recursive: the graph is a few dozen modules deep at most
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for comp in components:
        start = min(comp)
        # breadth-first back to start inside the component: the shortest cycle through it
        prev: dict[str, str] = {}
        frontier, seen, found = [start], {start}, None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, {})):
                    if w == start:
                        found = v
                        break
                    if w in comp and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(list(reversed(path)) + [start])
    return cycles


def test_no_import_cycles():
    graph, sources = _import_graph()
    cycles = _cycles(graph)
    lines = []
    for cycle in cycles:
        steps = [f"{_rel(sources[a])}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:])]
        lines.append(" -> ".join(cycle) + "\n    " + "\n    ".join(steps))
    assert not cycles, "import cycles among harness modules (function-level imports count):\n" + "\n".join(lines)


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_module_over_the_line_limit():
    over = []
    for path in _sources().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            over.append(f"{_rel(path)}: {n} lines")
    assert not over, f"modules over {MAX_LINES} lines (split them by job):\n" + "\n".join(over)


def test_docker_sdk_only_in_the_docker_backend():
    backends = HARNESS / "backends"
    found = []
    for path in _sources().values():
        if backends in path.parents:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(n == "docker" or n.startswith("docker.") for n in names):
                found.append(f"{_rel(path)}:{node.lineno}")
    assert not found, ("the Docker SDK is imported outside harness/backends/ (go through the docker backend):\n"
                       + "\n".join(found))


def test_one_module_level_function_named_decide():
    defs = []
    for path in _sources().values():
        for node in _tree(path).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "decide":
                defs.append(f"{_rel(path)}:{node.lineno}")
    assert len(defs) <= 1, ("more than one module-level function is named decide; name each for what it decides:\n"
                            + "\n".join(defs))


def test_product_code_never_imports_the_tests():
    found = []
    for path in _sources().values():
        for node in ast.walk(_tree(path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "tests" or n.startswith("tests.") for n in names):
                found.append(f"{_rel(path)}:{node.lineno}")
    assert not found, "harness/ imports from tests/ (test doubles are handed in, never imported):\n" + "\n".join(found)


def test_only_the_pipeline_writes_a_run_record():
    """The record is written once, by harness/pipeline/finish.py (and journal.py, for a run whose harness died)."""
    writers = []
    for path in _sources().values():
        text = path.read_text()
        if "RUN_RESULT" in text and "write_json_atomic" in text:
            writers.append(_rel(path))
    assert sorted(writers) == ["harness/journal.py", "harness/pipeline/finish.py"], writers

"""The fixed files (fixed/prepare.py and friends): imported by path, hashed for provenance.

fixed/ is not part of the harness package: it is mounted read-only into every run, and the harness
loads the very same file to build data caches, so both sides always run the same code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

from harness import paths

# Like Python's own import lock, for the modules imported here by path (sys.modules is process-wide).
_IMPORT_LOCK = threading.RLock()


def load_fixed_module(name: str = "prepare", fixed_dir: Path | None = None, fresh: bool = False) -> ModuleType:
    """Import fixed/<name>.py under a private module name (so it never shadows a candidate's import).

    fresh: a new instance that reads the environment now (prepare.py reads HARNESS_* at import)."""
    path = (fixed_dir or paths.fixed_dir()) / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fixed file missing; is this a harness checkout?")
    mod_name = f"_harness_fixed_{name}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    with _IMPORT_LOCK:  # threads of a pool: none may see a module another is still executing
        if fresh:
            mod_name += f"_{len(sys.modules)}"
        elif mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[mod_name]
            raise
        return module


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fixed_hashes(fixed_dir: Path | None = None) -> dict[str, str]:
    """sha256 of every file under fixed/, by name."""
    root = fixed_dir or paths.fixed_dir()
    return {p.relative_to(root).as_posix(): file_sha256(p)
            for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}

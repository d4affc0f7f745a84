"""Test doubles, and the one place that loads them by path.

``load_fake_nvml()`` gives the fake ``pynvml`` of ``pynvml.py`` next to this file. The hardware code
never loads it: it takes a pynvml-like module as an ``nvml_module`` argument, and tests hand this one in
(``FAKE.make_module([...])`` for an independent machine per test, or the module itself as a default
machine with one healthy H100 SXM). ``make bench`` hands its path to ``harness/bench.py``
(``--nvml-stand-in``) on a machine without a GPU; no product code imports from tests/.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FAKE_NVML_PATH = Path(__file__).resolve().parent / "pynvml.py"
_FAKE_NVML_NAME = "harness_fake_pynvml"


def load_module_from_path(path: str | Path, name: str = _FAKE_NVML_NAME) -> ModuleType:
    """Import the file at ``path`` as module ``name``, once per process (later calls return the same module)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def load_fake_nvml() -> ModuleType:
    """The fake pynvml module (tests/fakes/pynvml.py), loaded once per process."""
    return load_module_from_path(FAKE_NVML_PATH)

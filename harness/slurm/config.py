"""What a Slurm job of the harness asks for, from the command line or a [slurm] section of a TOML config
file (--slurm-config FILE, else $HARNESS_CONFIG_DIR or $XDG_CONFIG_HOME/harness/config.toml when present):

    [slurm]
    shared_dir = "/shared/harness"   # a folder every node and the submitting host see at this same path
    partition = "gpu"
    account = "lab"
    qos = "normal"
    gpus = 1                         # per job (sbatch --gpus); 0 on a CPU cluster
    gres = "gpu:1"                   # or a gres string instead of gpus
    cpus_per_task = 8                # default: the benchmark's limits.cpus; the run's containers are
                                     # pinned to the CPUs Slurm binds the job to (task/affinity, task/cgroup)
    mem = "64G"
    time_margin_s = 600              # the job's time limit: the run's hard timeout + evaluation + this
    node_backend = "docker"          # or "local" (a process on the node: every record says unisolated)
    requeue = false                  # a job lost with its node or preempted is retried once
    sbatch = ["--constraint=h100"]   # extra sbatch options, verbatim
    setup = ["module load cuda"]     # shell lines the job runs before the harness starts on the node

The command line wins over the file, key by key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

NODE_BACKENDS = ("docker", "local")
# sbatch options the command line may add (the config file, the operator's, may add any): placement and
# resources only. Never --export, --chdir, --output, --uid ...: they would let whoever calls the harness
# choose what runs on the node beside the run, or where the job writes.
CLI_SBATCH = frozenset({
    "constraint", "exclude", "nodelist", "reservation", "exclusive", "mem", "mem-per-cpu", "mem-per-gpu", "gres",
    "gpus", "gpus-per-node", "gpus-per-task", "cpus-per-gpu", "cpus-per-task", "time-min", "nice", "licenses",
    "comment", "begin", "deadline", "hint", "partition", "account", "qos"})


class SlurmConfigError(ValueError):
    """A bad [slurm] setting: the message names the file, the key and what to write instead."""


@dataclass(frozen=True)
class SlurmOptions:
    shared_dir: Path | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int | None = None
    gres: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time_margin_s: float = 600.0
    node_backend: str = "docker"
    requeue: bool = False
    sbatch: tuple[str, ...] = field(default_factory=tuple)
    setup: tuple[str, ...] = field(default_factory=tuple)
    poll_s: float = 2.0  # how often job states are read (sacct)


_TYPES: dict[str, tuple[type, ...]] = {
    "shared_dir": (str,), "partition": (str,), "account": (str,), "qos": (str,), "gpus": (int,), "gres": (str,),
    "cpus_per_task": (int,), "mem": (str,), "time_margin_s": (int, float), "node_backend": (str,),
    "requeue": (bool,), "sbatch": (list,), "setup": (list,), "poll_s": (int, float)}


def default_config_file() -> Path:
    base = os.environ.get("HARNESS_CONFIG_DIR") or str(
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "harness")
    return Path(base) / "config.toml"


def load_slurm_options(path: Path | None = None, **overrides: Any) -> SlurmOptions:
    """The [slurm] section of `path` (or the default config file when it exists), then the overrides
    that are not None; SlurmConfigError names the file and key of a bad value."""
    source = Path(path) if path is not None else default_config_file()
    opts = SlurmOptions()
    if path is not None or source.is_file():
        opts = _from_file(source)
    given = {k: v for k, v in overrides.items() if v is not None and v != () and v != []}
    for opt in given.get("sbatch", ()):
        name = opt.lstrip("-").partition("=")[0]
        if name not in CLI_SBATCH:
            raise SlurmConfigError(f"--sbatch {opt}: not an option the command line may add (placement and "
                                   f"resources only: {', '.join(sorted(CLI_SBATCH))}); an operator can put "
                                   "other options in the [slurm] sbatch list of the config file")
    for key in ("sbatch", "setup"):
        if key in given:
            given[key] = tuple(getattr(opts, key)) + tuple(given[key])
    if "shared_dir" in given:
        given["shared_dir"] = Path(given["shared_dir"])
    opts = replace(opts, **given)
    for value in (*opts.sbatch, *opts.setup, *(str(getattr(opts, k) or "") for k in ("partition", "account", "qos",
                                                                                     "gres", "mem"))):
        if any(ord(c) < 32 or ord(c) == 127 for c in value):  # a newline would end an #SBATCH line
            raise SlurmConfigError(f"{value!r}: control characters are not allowed in a Slurm setting")
    if opts.node_backend not in NODE_BACKENDS:
        raise SlurmConfigError(f"node_backend {opts.node_backend!r}: use one of {', '.join(NODE_BACKENDS)}")
    return opts


def _from_file(path: Path) -> SlurmOptions:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise SlurmConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SlurmConfigError(f"{path}: not valid TOML: {e}") from None
    section = doc.get("slurm", {})
    if not isinstance(section, dict):
        raise SlurmConfigError(f"{path}: [slurm] must be a table of settings")
    known = {f.name for f in fields(SlurmOptions)}
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in known:
            raise SlurmConfigError(f"{path}: [slurm] {key}: unknown setting; known: {', '.join(sorted(known))}")
        types = _TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise SlurmConfigError(f"{path}: [slurm] {key} = {value!r}: expected "
                                   f"{' or '.join(t.__name__ for t in types)}")
        if key == "sbatch":
            if not all(isinstance(v, str) and v.startswith("-") for v in value):
                raise SlurmConfigError(f"{path}: [slurm] sbatch: a list of sbatch options, each starting with '-'")
            value = tuple(value)
        if key == "setup":
            if not all(isinstance(v, str) for v in value):
                raise SlurmConfigError(f"{path}: [slurm] setup: a list of shell lines (strings)")
            value = tuple(value)
        if key == "shared_dir":
            value = Path(value)
        values[key] = value
    return SlurmOptions(**values)


def sbatch_parameters(extra: tuple[str, ...]) -> dict[str, Any]:
    """Extra sbatch options ("--constraint=h100", "--exclusive") as submitit's additional_parameters."""
    out: dict[str, Any] = {}
    for opt in extra:
        name, sep, value = opt.lstrip("-").partition("=")
        if not name:
            raise SlurmConfigError(f"sbatch option {opt!r}: write it as --name=value or --flag")
        out[name.replace("-", "_")] = value if sep else True
    return out

"""Live progress of a run on the terminal: elapsed vs budget, step, loss. Plain lines when not a TTY.

The run's own output lines (show_lines) are the candidate's: each goes through harness.sanitize.clean_text,
so no escape sequence or bidi control from train.py reaches the terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness.logparse import Progress as RunProgress
from harness.sanitize import clean_text


class RunDisplay:
    """Consumes run events (start, progress, line, end). show_lines echoes the run's own output."""

    def __init__(self, console: Console | None = None, show_lines: bool = False, plain_every_s: float = 10.0):
        self.console = console or Console(stderr=True)
        self.show_lines = show_lines
        self.plain_every_s = plain_every_s
        self.live = self.console.is_terminal
        self._bar: Progress | None = None
        self._task = None
        self._last_plain = 0.0
        self._label = ""

    def __call__(self, kind: str, value: Any) -> None:
        getattr(self, f"_on_{kind}", lambda _v: None)(value)

    def _on_start(self, info: dict) -> None:
        iso = "" if info["isolated"] else " (unisolated)"
        self._label = f"{info['backend']}{iso}"
        self.console.print(f"run {info['run_id']} · backend {self._label} · seed {info['seed']} · "
                           f"budget {info['budget_s']:g}s · {info['run_dir']}")
        if self.live:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f}s"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[status]}"), console=self.console, transient=True)
            self._task = self._bar.add_task(f"training [{self._label}]", total=info["budget_s"], status="starting")
            self._bar.start()

    def _on_progress(self, p: RunProgress) -> None:
        status = f"step {p.step} · loss {p.loss:.4f}" if p.loss is not None else f"step {p.step}"
        if p.mfu is not None:
            status += f" · MFU {p.mfu:.1f}%"
        if self._bar is not None:
            self._bar.update(self._task, completed=min(p.elapsed or 0.0, self._bar.tasks[0].total), status=status)
        elif time.time() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.time()
            budget = f"/{p.budget:g}" if p.budget else ""
            print(f"[{self._label}] {p.elapsed or 0:.0f}{budget}s · {status}", file=sys.stderr, flush=True)

    def _on_line(self, line: str) -> None:
        if self.show_lines:
            line = clean_text(line)
            if self._bar is not None:
                self._bar.console.print(line, markup=False, highlight=False)
            else:
                print(line, file=sys.stderr, flush=True)

    def _on_note(self, text: str) -> None:
        self.console.print(clean_text(str(text)), markup=False, highlight=False)

    def _on_end(self, _result: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class PoolDisplay:
    """Run events of several runs at once (harness/pool/), from several threads: one plain line per start,
    per end, and per run every plain_every_s of progress, each naming its run; no live bars (they would
    fight over the terminal)."""

    def __init__(self, console: Console | None = None, plain_every_s: float = 15.0):
        self.console = console or Console(stderr=True)
        self.plain_every_s = plain_every_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._names = threading.local()

    def __call__(self, kind: str, value: Any) -> None:
        with self._lock:
            if kind == "start":
                self._names.run_id = value["run_id"]
                iso = "" if value["isolated"] else " (unisolated)"
                self._print(f"run {value['run_id']} started · {value['backend']}{iso} · {value['hardware']} · "
                            f"seed {value['seed']} · budget {value['budget_s']:g}s")
            elif kind == "progress":
                run_id = getattr(self._names, "run_id", "?")
                if time.time() - self._last.get(run_id, 0.0) >= self.plain_every_s:
                    self._last[run_id] = time.time()
                    loss = f" · loss {value.loss:.4f}" if value.loss is not None else ""
                    self._print(f"run {run_id} · {value.elapsed or 0:.0f}s · step {value.step}{loss}")
            elif kind == "note":  # what the harness did for the runs (a Slurm job submitted, cancelled)
                self._print(str(value))
            elif kind == "end":
                score = f" · val_bpb {value.val_bpb:.4f}" if value.val_bpb is not None else ""
                flags = f" · flags {','.join(value.flags)}" if value.flags else ""
                self._print(f"run {value.run_id} ended: {value.status}{score}{flags}")

    def _print(self, text: str) -> None:
        self.console.print(clean_text(text), markup=False, highlight=False)

"""Stages within one time budget: how a GPU window's command (``benchmarks/gpu_session.py``) runs.

A command is a list of stages in priority order. Each stage is one or more processes started
together (parallel shards) under a timeout taken from one total budget: a stage gets its planned
seconds plus whatever the stages before it left unused, but never the seconds planned for the
stages after it (unless it is behind schedule, when it still gets its own), and never more than
remains. A stage is told its deadline (``--time-budget`` for a benchmark, ``PYTEST_DEADLINE`` for
pytest) ``STOP_EARLY`` seconds before its timeout, so that it stops between steps; at the timeout
its process groups get SIGTERM, then SIGKILL ``KILL_GRACE`` seconds later.

Everything lands under the output folder as it goes: ``results.json`` (the benchmark rows, which
every benchmark step rewrites atomically, plus ``session``: each stage's budget, time and outcome,
the pytest summaries, the environment and the large-input check), ``report.md`` (re-rendered
after every stage), ``session.log`` (every process's output, a stage at a time) and, for pytest
stages, ``<stage>.jsonl`` (one line per test as it finishes). A run cut anywhere leaves a valid
results.json and a report of what it measured.
"""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import jsonfile, provenance
from .pytest_stream import DEADLINE, STREAM, WORKER, summarize

REPO = Path(__file__).resolve().parent.parent
STOP_EARLY = 15  # seconds before its timeout that a stage is asked to stop
KILL_GRACE = 3  # seconds between SIGTERM and SIGKILL
MIN_STAGE_SECONDS = 5  # a stage offered less (or less than its plan, if that is shorter) is skipped
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 15  # lines of a failed process's output printed
STAGE_VARIABLE = "SESSION_STAGE"  # the stage's name, which a benchmark run records in its settings


@dataclass(frozen=True)
class Command:
    argv: Tuple[str, ...]
    env: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StageContext:
    """What a stage's commands are built from when it starts."""

    out: Path
    python: str
    timeout: float
    workers: int

    @property
    def soft_seconds(self) -> float:
        """The time budget a stage's process is told (it stops starting steps after it)."""
        return max(1.0, self.timeout - STOP_EARLY)


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float  # planned budget
    describes: str
    commands: Callable[[StageContext], List[Command]]
    needs_gpu: bool = True
    pytest: bool = False  # its processes stream pytest events to <out>/<name>.jsonl


def stage_timeout(stages: Sequence[Stage], index: int, remaining: float) -> float:
    """Seconds stage ``index`` may run when ``remaining`` seconds of the budget are left."""
    later = sum(stage.seconds for stage in stages[index + 1:])
    return max(0.0, min(remaining, max(stages[index].seconds, remaining - later)))


def _kill(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_commands(commands: Sequence[Command], timeout: float, env: Dict[str, str], logs: Sequence[Path]) -> Tuple[List[Optional[int]], bool]:
    """Run ``commands`` in parallel, each in its own process group with its output in its log;
    kill every group still running after ``timeout`` s. Returns (exit codes, whether it was cut)."""
    processes = []
    for command, log in zip(commands, logs):
        with open(log, "wb") as out:
            processes.append(subprocess.Popen(list(command.argv), cwd=REPO, env=dict(env, **dict(command.env)),
                                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(p.poll() is None for p in processes):
        time.sleep(POLL_SECONDS)
    cut = any(p.poll() is None for p in processes)
    if cut:
        for p in processes:
            if p.poll() is None:
                _kill(p, signal.SIGTERM)
        grace = time.monotonic() + KILL_GRACE
        while time.monotonic() < grace and any(p.poll() is None for p in processes):
            time.sleep(POLL_SECONDS)
        for p in processes:
            if p.poll() is None:
                _kill(p, signal.SIGKILL)
    for p in processes:
        p.wait()
    return [p.returncode for p in processes], cut


class Session:
    """One command's run: its stages, its budget, its output folder."""

    def __init__(self, command: str, stages: Sequence[Stage], out: Path, total: float, margin: float,
                 start: Optional[float] = None, on_gpu: bool = True, workers: int = 1,
                 python: str = sys.executable, echo=print):
        self.command, self.stages, self.out = command, list(stages), Path(out)
        self.total, self.margin = total, margin
        self.start = time.time() if start is None else start  # Unix time: the shell's start counts too
        self.on_gpu, self.workers, self.python, self.echo = on_gpu, workers, python, echo
        self.results = self.out / "results.json"
        self.log = self.out / "session.log"
        commit, source = provenance.commit(REPO)
        self.record = dict(
            command=command, budget_s=total, margin_s=margin, workers=workers,
            started=datetime.datetime.fromtimestamp(self.start, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            commit=commit, commit_source=source, source_fingerprint=provenance.tree_fingerprint(REPO),
            elapsed_s=0.0, stages=[], pytest={})

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self) -> float:
        return self.total - self.margin - self.elapsed()

    def save(self) -> dict:
        """Write the session's record into results.json (keeping what the stages wrote there) and
        re-render report.md."""
        self.record["elapsed_s"] = round(self.elapsed(), 1)

        def change(data: dict) -> None:
            for key in ("peaks", "layers", "cases", "models"):
                data.setdefault(key, {} if key == "peaks" else [])
            data.setdefault("session", {}).update(self.record)

        data = jsonfile.update(self.results, change)
        from .report import render

        on_gpu = not data.get("interpreter", not self.on_gpu)
        (self.out / "report.md").write_text(
            render(data, data["peaks"], data["layers"], data["cases"], data["models"], on_gpu))
        return data

    def _append_log(self, stage: Stage, logs: Sequence[Path]) -> None:
        with open(self.log, "ab") as log:
            for index, path in enumerate(logs):
                log.write(f"\n===== {stage.name} [{index + 1}/{len(logs)}] =====\n".encode())
                log.write(path.read_bytes())

    def _benchmark_steps(self, stage: Stage) -> dict:
        """How many steps a benchmark stage planned and ran, and those it did not reach, from the
        settings its run left in results.json (none if it was killed before its first write)."""
        settings = (jsonfile.read(self.results, {}) or {}).get("settings") or {}
        if settings.get("session_stage") != stage.name:
            return {}
        return dict(steps=settings.get("steps"), steps_done=settings.get("steps_done"),
                    not_run=settings.get("not_run", []))

    def run_stage(self, index: int, scratch: Path) -> dict:
        stage = self.stages[index]
        entry = dict(name=stage.name, describes=stage.describes, budget_s=stage.seconds)
        timeout = stage_timeout(self.stages, index, self.remaining())
        entry["timeout_s"] = round(timeout, 1)
        if stage.needs_gpu and not self.on_gpu:
            entry.update(status="skipped: no GPU", elapsed_s=0.0)
            return entry
        if timeout < min(MIN_STAGE_SECONDS, stage.seconds):
            entry.update(status="skipped: no time left", elapsed_s=0.0)
            return entry
        context = StageContext(out=self.out, python=self.python, timeout=timeout, workers=self.workers)
        commands = stage.commands(context)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env[STAGE_VARIABLE] = stage.name  # a benchmark records it beside its steps (see _benchmark_steps)
        stream = self.out / f"{stage.name}.jsonl"
        if stage.pytest:
            env.update({STREAM: str(stream), DEADLINE: f"{time.time() + timeout - STOP_EARLY:.1f}"})
            commands = [Command(c.argv, c.env + ((WORKER, str(i)),)) for i, c in enumerate(commands)]
        logs = [scratch / f"{stage.name}-{i}.log" for i in range(len(commands))]
        began = time.monotonic()
        codes, cut = run_commands(commands, timeout, env, logs)
        entry["elapsed_s"] = round(time.monotonic() - began, 1)
        entry["returncodes"] = codes
        entry["status"] = "timed out (killed)" if cut else ("done" if all(c == 0 for c in codes) else f"exit {codes}")
        self._append_log(stage, logs)
        entry.update(self._benchmark_steps(stage))
        for code, log in zip(codes, logs):
            # pytest's 1 (failures) and 2 (stopped at its deadline) are summarised below; a kill is the status.
            if code is not None and code > 0 and not (stage.pytest and code in (1, 2)):
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                self.echo(f"  {stage.name}: a process ended with exit code {code}; its last lines:")
                self.echo("\n".join("    " + line[:200] for line in tail))
        if stage.pytest:
            summary = summarize(stream)
            self.record["pytest"][stage.name] = summary
            from .report import smoke_sentence

            self.echo(f"  {stage.name}: " + smoke_sentence(summary))
            for failure in summary["failed"][:10]:
                self.echo(f"  FAILED {failure['nodeid']} ({failure['when']}): {failure['message'][:160]}")
        return entry

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.save()
        with tempfile.TemporaryDirectory(prefix="gpu-session-") as scratch:
            for index, stage in enumerate(self.stages):
                self.echo(f"[{self.elapsed():4.0f} s] {stage.name}: {stage.describes}")
                entry = self.run_stage(index, Path(scratch))
                self.record["stages"].append(entry)
                self.save()
                self.echo(f"[{self.elapsed():4.0f} s] {stage.name}: {entry['status']} in {entry['elapsed_s']:.0f} s "
                          f"(planned {stage.seconds:.0f} s, given {entry['timeout_s']:.0f} s)")
        jsonfile.remove_leftovers(self.out)
        return self.save()

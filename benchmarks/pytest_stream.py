"""A pytest plugin for runs that may be cut short: ``python -m pytest -p benchmarks.pytest_stream``.

* With ``PYTEST_STREAM=<file>``, it appends one JSON line per event to that file as it happens:
  the node ids collected, each test phase that did not simply pass (and each passing call), the
  stop and the end. Several pytest processes may append to one file (one ``write`` per line, in
  append mode). A run killed at any point leaves every finished test recorded, which pytest's own
  summary and junit XML (written at the end) do not.
* With ``PYTEST_DEADLINE=<Unix time>``, it stops the session after the test that ends past that
  time (pytest then ends normally, with its summary).

``summarize`` turns such a file into counts and the list of failures.
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict

STREAM = "PYTEST_STREAM"
DEADLINE = "PYTEST_DEADLINE"
WORKER = "PYTEST_WORKER"
MESSAGE_CHARS = 300
TRACEBACK_CHARS = 3000

_session = None


def _record(event: str, **fields) -> None:
    path = os.environ.get(STREAM)
    if not path:
        return
    line = json.dumps(dict(event=event, worker=os.environ.get(WORKER, "0"), time=time.time(), **fields)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _message(report) -> str:
    """The one line that says what went wrong (the assertion or exception), else the skip reason."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2])[:MESSAGE_CHARS]
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:MESSAGE_CHARS] if crash.message else ""
    text = report.longreprtext.strip().splitlines()
    return text[-1][:MESSAGE_CHARS] if text else ""


def pytest_sessionstart(session) -> None:
    global _session
    _session = session


def pytest_collection_finish(session) -> None:
    _record("collected", nodeids=[item.nodeid for item in session.items])


def pytest_runtest_logreport(report) -> None:
    if report.passed and report.when != "call":
        return
    fields = dict(nodeid=report.nodeid, when=report.when, outcome=report.outcome, duration=round(report.duration, 3))
    if not report.passed:
        fields["message"] = _message(report)
    if report.failed:
        fields["traceback"] = report.longreprtext[-TRACEBACK_CHARS:]
    _record("report", **fields)


def pytest_runtest_logfinish(nodeid, location) -> None:
    deadline = os.environ.get(DEADLINE)
    if deadline and _session is not None and time.time() >= float(deadline) and not _session.shouldstop:
        _session.shouldstop = "time budget spent (PYTEST_DEADLINE)"
        _record("stopped", after=nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    _record("finished", exitstatus=int(exitstatus))


def summarize(path) -> Dict[str, object]:
    """Counts over every worker's lines in ``path``: collected, passed, skipped, not_run (collected
    but never reported: cut off or killed), failed (one entry per test, with the phase and the
    message), stopped (a deadline stopped a worker), finished (workers that reached the end)."""
    collected, outcomes, failed = [], {}, {}
    stopped = finished = 0
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                kind = event["event"]
                if kind == "collected":
                    collected += event["nodeids"]
                elif kind == "report":
                    nodeid = event["nodeid"]
                    if event["outcome"] == "failed":
                        failed.setdefault(nodeid, dict(nodeid=nodeid, when=event["when"], message=event.get("message", ""),
                                                       traceback=event.get("traceback", "")))
                    outcomes.setdefault(nodeid, event["outcome"])
                elif kind == "stopped":
                    stopped += 1
                elif kind == "finished":
                    finished += 1
    reported = set(outcomes)
    return dict(
        collected=len(collected),
        passed=sum(1 for nodeid, outcome in outcomes.items() if outcome == "passed" and nodeid not in failed),
        skipped=sum(1 for outcome in outcomes.values() if outcome == "skipped"),
        not_run=sum(1 for nodeid in collected if nodeid not in reported),
        failed=list(failed.values()),
        stopped=stopped > 0,
        finished=finished,
    )


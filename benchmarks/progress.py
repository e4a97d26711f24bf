"""A dependency-free progress bar for long runs (one updating line on a terminal, a line per
step in a log)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, stream=sys.stderr, width: int = 28):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.width = width
        self.start = time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def step(self, label: str) -> None:
        """Announce that ``label`` is starting."""
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {elapsed:6.0f}s eta {eta:5.0f}s  {label}"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def close(self) -> None:
        elapsed = time.perf_counter() - self.start
        message = f"done: {self.total} steps in {elapsed:.0f}s"
        self.stream.write(("\r" + message.ljust(150) + "\n") if self.tty else message + "\n")
        self.stream.flush()

"""The progress of a long run, by tqdm: a live bar on a terminal; in a log (a device command's
output, a CI job) one tqdm-formatted line per step, since a redrawn bar is one unreadable line there."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """``step(label)`` announces that the step ``label`` starts; ``close()`` ends the run."""

    def __init__(self, total: int, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        on_terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, file=self.stream, dynamic_ncols=True) if on_terminal else None

    def _line(self, label: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.stream.write(tqdm.format_meter(self.done, self.total, elapsed, ascii=True, postfix=label) + "\n")
        self.stream.flush()

    def step(self, label: str) -> None:
        if self.bar is None:
            self._line(label)
        else:
            self.bar.update(self.done - self.bar.n)
            self.bar.set_postfix_str(label)
        self.done += 1

    def close(self) -> None:
        if self.bar is None:
            self._line("done")
        else:
            self.bar.update(self.done - self.bar.n)
            self.bar.close()

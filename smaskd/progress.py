"""The CLI's progress line: items done / total, rate and ETA, redrawn in place on stderr.

Why here and not in the core: the core reports progress through a plain callback,
``on_progress(done, total, stage)`` (``ConvertOptions.on_progress``; an export checks every
item, then renders and writes them: two stages), and never learns who listens;
this module is one listener, for a person at a terminal. It draws nothing for a job that ends
within ``after`` seconds (1 s: a short conversion stays one summary line), redraws at most
``1 / interval`` times a second (a 20,000-item export calls back 20,000 times), and
``clear()`` blanks the line so the summary, a warning or an error starts on a clean line.

No escape sequences: the line is redrawn with ``\\r`` and cleared by overwriting it with
spaces, which works on every terminal (``TERM=dumb`` included) and keeps a line that fits in
the terminal's width, since a line that wraps cannot be redrawn from its start.

Why not tqdm or rich: the ~70 lines of code here do what is needed, and the CLI's start-up
(it imports only what a convert needs) would pay for either on every run.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable, TextIO

__all__ = ["AFTER_ENV", "ProgressLine", "progress_after"]

#: Seconds a job runs before its line appears (tests set 0 to see it at once).
AFTER_ENV = "SMASKD_PROGRESS_AFTER"
DEFAULT_AFTER = 1.0


def progress_after() -> float:
    """``$SMASKD_PROGRESS_AFTER`` as seconds, else 1 s; a bad value is the default."""
    try:
        return max(0.0, float(os.environ.get(AFTER_ENV, DEFAULT_AFTER)))
    except ValueError:
        return DEFAULT_AFTER


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """A callable ``(done, total, stage) -> None`` drawing
    ``what stage [####....] done/total items ...``; rate and ETA restart with each stage."""

    def __init__(self, stream: TextIO, what: str, after: float = DEFAULT_AFTER,
                 interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.what, self.after, self.interval = stream, what, after, interval
        self.clock = clock
        self.started = clock()
        self.first: tuple[float, int] | None = None  # (time, done) of the first report: rate
        self.last_draw = float("-inf")
        self.width = 0  # characters on the line now: what clear() overwrites
        self.stage = ""

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        now = self.clock()
        if self.first is None or stage != self.stage:  # a new stage is shown at once
            self.first, self.stage, self.last_draw = (now, done), stage, float("-inf")
        if now - self.started < self.after or now - self.last_draw < self.interval:
            return
        self.last_draw = now
        text = self.line(done, total, now)
        pad = " " * max(0, self.width - len(text))
        # widened first: a signal raised inside the write still leaves clear() the whole line
        self.width = max(self.width, len(text))
        self._put("\r" + text + pad)

    def line(self, done: int, total: int, now: float) -> str:
        """The text of the line, cut to the terminal's width."""
        t0, done0 = self.first or (now, done)
        rate = (done - done0) / (now - t0) if now > t0 and done > done0 else 0.0
        share = done / total if total else 1.0
        left = max(0, total - done)
        eta = "ETA ?" if left and not rate else f"ETA {_duration(left / rate if left else 0)}"
        speed = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
        tail = f" {done}/{total} items {share:4.0%} {speed} items/s {eta}"
        columns = self._columns() - 1  # text in the last column wraps on some terminals
        bar = max(0, min(30, columns - len(self.what) - len(self.stage) - len(tail) - 4))
        filled = int(bar * share)
        what = f"{self.what} {self.stage}" if self.stage else self.what
        text = f"{what} [{'#' * filled}{'.' * (bar - filled)}]{tail}" if bar >= 10 else (
            f"{what}:{tail}")
        return text[:columns]

    def _columns(self) -> int:
        """The width of the terminal the line is drawn on (stderr's, not stdout's)."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size((80, 24)).columns

    def clear(self) -> None:
        """Blank the line (the end of a job, an error, a signal); nothing if none was drawn."""
        if self.width and self._put("\r" + " " * self.width + "\r"):
            self.width = 0

    def _put(self, text: str) -> bool:
        try:  # progress never fails a conversion (a closed or revoked terminal)
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            return False
        return True

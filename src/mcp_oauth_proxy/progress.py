"""Progress of the long commands (``keys reencrypt``, ``db gc``, ``db
upgrade``): a bar on a terminal (tqdm), plain periodic lines otherwise (a
log file, a CI job), and the time it all took for the summary each command
prints at its end."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm


class Progress:
    """``advance(n)`` as work is done; a line every ``every`` seconds when
    not on a terminal."""

    def __init__(self, what: str, unit: str, stream: TextIO | None = None, every: float = 5.0,
                 total: int | None = None) -> None:
        self.what, self.unit, self.every = what, unit, every
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.monotonic()
        self._said = self.started
        self._bar: Any = None
        if self.stream.isatty():
            self._bar = tqdm(desc=what, unit=unit, total=total, file=self.stream, leave=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._said >= self.every:
            self._said = now
            print(f"{self.what}: {self.done} {self.unit}(s) so far, {now - self.started:.0f} s", file=self.stream,
                  flush=True)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()

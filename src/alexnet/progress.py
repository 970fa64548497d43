"""A progress display: a tqdm bar on a terminal, a line every few seconds in a log."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """``total`` steps, counted from ``start`` (a pass resumed part-way)."""

    def __init__(self, total: int, desc: str, enabled: bool = True, log_every: float = 30.0, start: int = 0) -> None:
        self.enabled, self.desc, self.total, self.log_every = enabled, desc, total, log_every
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, initial=start) if self.tty else None
        self.count, self.last = start, time.perf_counter()

    def update(self, n: int = 1, **stats: float | str) -> None:
        self.count += n
        if not self.enabled:
            return
        text = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in stats.items()}
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(text, refresh=False)
        elif time.perf_counter() - self.last >= self.log_every:
            self.last = time.perf_counter()
            body = " ".join(f"{k}={v}" for k, v in text.items())
            print(f"{self.desc} {self.count}/{self.total} {body}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

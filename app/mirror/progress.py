"""How a mirror run shows its progress on a terminal (``wharf mirror``), and sizes as people read them."""

from __future__ import annotations

from typing import TextIO


class TerminalProgress:
    """A mirror run's progress: one self-rewriting status line on a terminal, nothing elsewhere (CI logs).

    Each added file is also printed as a line to ``out``, if given.
    """

    def __init__(self, stream: TextIO, enabled: bool, out: TextIO | None = None):
        self.stream = stream
        self.enabled = enabled
        self.out = out
        self._text = ""
        self._bytes = 0
        self._total: int | None = None

    def show(self, text: str, total: int | None = None) -> None:
        self._text, self._bytes, self._total = text, 0, total
        self._draw()

    def advance(self, count: int) -> None:
        self._bytes += count
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        amount = f" {human_size(self._bytes)}" if self._bytes else ""
        if self._bytes and self._total:
            amount += f"/{human_size(self._total)}"
        self.stream.write("\r\033[K" + self._text + amount)
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def added(self, filename: str, size: int) -> None:
        if self.out is not None:
            print(f"added {filename} ({human_size(size)})", file=self.out, flush=True)


def human_size(count: int) -> str:
    """A byte count in decimal units, as a download's progress shows it (1.5 MB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)

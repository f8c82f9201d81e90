"""Where a server's time goes under load: py-spy samples of every worker, summed per function."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

from .load import wrk
from .servers import Server

_LINE = re.compile(r" \((?P<file>[^()]*?)(?::\d+)?\)$")


def have_py_spy() -> bool:
    return shutil.which("py-spy") is not None


def _frame(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (to/file.py)``: functions, not lines."""
    match = _LINE.search(frame)
    if not match:
        return frame
    parts = Path(match["file"]).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else match["file"]
    return frame[: match.start()] + f" ({short})"


def summarize(raw: str, top: int = 15) -> dict:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        # py-spy puts "process N:..." and thread names first; they are not code.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[list]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def profile(server: Server, url: str, headers: dict | None, duration: float, out: Path) -> dict:
    """Sample all of ``server``'s workers with py-spy while wrk loads ``url``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pids = server.workers()
    results: dict = {}

    def spy(pid: int, path: Path) -> None:
        subprocess.run(["py-spy", "record", "--pid", str(pid), "--duration", f"{int(duration)}",
                        "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(path)],
                       capture_output=True, timeout=duration + 60)

    threads = []
    paths = []
    for pid in pids:
        path = out.with_name(f"{out.stem}-{pid}.txt")
        paths.append(path)
        threads.append(threading.Thread(target=spy, args=(pid, path)))
    for t in threads:
        t.start()
    results["load_while_profiled"] = wrk(url, duration, headers)
    for t in threads:
        t.join()
    raw = "\n".join(p.read_text() for p in paths if p.exists())
    out.write_text(raw)
    for p in paths:
        p.unlink(missing_ok=True)
    # py-spy leaves out idle threads by default: a worker waiting in accept() is not counted.
    results.update(summarize(raw))
    return results

"""``orchestrate view`` as a subprocess, and headless Chromium pointed at it (screenshots, the DOM after
the page's scripts ran): helpers of the browser tests and of benchmarks/view_screenshots.py."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

_URL = re.compile(r"(http://\S+)")


@contextlib.contextmanager
def serving(*paths: Path, args: tuple[str, ...] = (), printed: list[str] | None = None) -> Iterator[str]:
    """``orchestrate view PATHS --no-open`` on a free loopback port; yields its URL, stops it after.
    ``printed`` receives the lines it printed up to its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "view", *map(str, paths), "--no-open", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = printed if printed is not None else []
        match = None
        while match is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = _URL.search(line)
        if match is None:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise RuntimeError(f"orchestrate view printed {line!r}; stderr: {err}")
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _chromium(chromium: str, *args: str, budget_ms: int = 8000) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                # Virtual time runs out only while no request is pending: an open live stream (SSE)
                # keeps the page running in real time until its script closes the stream.
                f"--virtual-time-budget={budget_ms}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=budget_ms / 1000 + 120,
            env={**os.environ, "HOME": profile},
        )


def screenshot(chromium: str, url: str, out: Path, size: str = "1400,1000") -> None:
    proc = _chromium(chromium, f"--screenshot={out}", f"--window-size={size}", url)
    if not out.is_file():
        raise RuntimeError(f"no screenshot of {url}: {proc.stderr[-2000:]}")


def dom(chromium: str, url: str, budget_ms: int = 8000) -> str:
    """The page's DOM after its scripts ran (what a person sees, as HTML)."""
    return _chromium(chromium, "--dump-dom", url, budget_ms=budget_ms).stdout

"""``orchestrate view`` against its targets (issue #12), on synthetic results in the real formats:

- 1,000 run directories: the runs page's rows (GET /api/runs) in <= 0.5 s;
- a run of 100,000 attempts: the run page's first paint (GET /api/runs/R + the first page of
  attempts) in <= 1 s, cold (the server has never seen the run) and warm;
- a 100 MB events file: its attempt page (GET the attempt + the first page of its transcript) in
  <= 1 s, cold;
- the server's memory: its peak RSS after all of that (bounded: it holds indexes, never whole files).

    .venv/bin/python benchmarks/view.py [--keep DIR]

The server is ``orchestrate view`` in its own process on a free loopback port; times are wall clock of
the HTTP requests, as a browser would wait for them.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.view.synthetic import write_run, write_transcript  # noqa: E402


def _cpu_s(pid: int) -> float:
    """The server's CPU time so far (user + system): what a request cost it, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(port: int, path: str) -> tuple[float, int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("GET", path)
    res = conn.getresponse()
    body = res.read()
    elapsed = time.perf_counter() - start
    conn.close()
    if res.status != 200:
        raise RuntimeError(f"{path}: {res.status} {body[:200]!r}")
    return elapsed, len(body), res.status


def _peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def _line(what: str, seconds: float, cpu: float, target: float | None) -> None:
    verdict = "" if target is None else ("  ok" if seconds <= target else "  OVER TARGET")
    goal = f"(target <= {target:g} s)" if target is not None else ""
    print(f"{what:<56} {seconds:7.3f} s wall {cpu:6.2f} s server CPU  {goal}{verdict}")


def generate(base: Path) -> Path:
    results = base / "results"
    t = time.perf_counter()
    for i in range(1000):
        write_run(results / f"run-{i:04d}", 20)
    big = write_run(results / "zz-big", 100_000)
    events = big / "events" / "big.jsonl"
    write_transcript(events, 100 * 1024 * 1024)
    # The big transcript belongs to the big run's first attempt.
    lines = (big / "results.jsonl").read_bytes().split(b"\n", 1)
    first = lines[0].replace(b'"events_file":null', b'"events_file":"events/big.jsonl"')
    (big / "results.jsonl").write_bytes(first + b"\n" + lines[1])
    print(
        f"generated 1,001 runs (one of 100,000 attempts) and a 100 MB transcript in {time.perf_counter() - t:.1f} s"
    )
    return results


def measure(results: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "view", str(results), "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r":(\d+)/", line).group(1))  # type: ignore[union-attr]
        rss0 = _peak_rss_mb(proc.pid)

        def timed(what: str, target: float | None, *paths: str) -> None:
            cpu = _cpu_s(proc.pid)
            wall = sum(_get(port, p)[0] for p in paths)
            _line(what, wall, _cpu_s(proc.pid) - cpu, target)

        big = "/api/runs/zz-big"
        timed("runs page rows, 1,001 runs (cold)", 0.5, "/api/runs")
        timed("runs page rows, 1,001 runs (warm)", 0.5, "/api/runs")
        timed("run page first paint, 100,000 attempts (cold)", 1.0, big, big + "/attempts?limit=100")
        _get(port, big + "/attempts?model=model-0")  # waits for the whole index
        timed("run page, 100,000 attempts, a filtered page", 1.0, big + "/attempts?start=50000&model=model-1")
        timed(
            "attempt page, 100 MB transcript (cold)", 1.0, big + "/attempts/0", big + "/attempts/0/transcript"
        )
        timed(
            "attempt page, 100 MB transcript, a page at 50 MB (warm)",
            1.0,
            big + f"/attempts/0/transcript?at={50 * 1024 * 1024}",
        )
        timed("search a 100,000-attempt run (one 100 MB transcript)", None, big + "/search?q=f99999.py")
        print(
            f"server peak RSS: {rss0:.0f} MB at start, {_peak_rss_mb(proc.pid):.0f} MB after all of the above"
        )
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this directory and keep it")
    args = parser.parse_args()
    if args.keep is not None and (args.keep / "results").is_dir():
        measure(args.keep / "results")
        return
    base = args.keep or Path(tempfile.mkdtemp(prefix="view-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        measure(generate(base))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

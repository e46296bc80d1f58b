"""``orchestrate view`` against its targets (issue #12), on synthetic results in the real formats:

- 1,000 run directories: the runs page's first rows (GET /api/runs?first=100, what the page asks for
  first) in <= 0.5 s, then the whole list;
- a run of 100,000 attempts: the run page's first paint (GET /api/runs/R + the first page of
  attempts) in <= 1 s, cold (the server has never seen the run) and warm;
- a 100 MB events file: its attempt page (GET the attempt + the first page of its transcript) in
  <= 1 s, cold, with the index a run's writer saves beside the transcript (and, for comparison, without
  it: an old run's transcript, whose index the viewer builds by reading it whole);
- the server's memory: its peak RSS after all of that, and in a server of its own after the whole
  100,000-attempt run was indexed, paged and filtered, then compared with itself (bounded: the attempt
  index is a file on disk, and the server holds a page of it, never the run's records).

    .venv/bin/python benchmarks/view.py [--keep DIR] [--json]

Each cold figure is the first request of a server started for it (``orchestrate view`` in its own
process, on a free loopback port), after every file of the results was dropped from the page cache
(``posix_fadvise(DONTNEED)`` file by file: it needs no root, and reaches only these files; the kernel's
directory and inode caches stay warm). Beside its wall time (what a browser waits), each line gives the
server's CPU time, the files it opened (counted by an audit hook in the server) and the bytes it read
(``/proc/PID/io``), and the target. ``--json`` prints one JSON object a line instead of the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.results.transcript_index import index_path, save_index  # noqa: E402
from tests.view.synthetic import write_run, write_transcript  # noqa: E402

_SERVER = """
import os, signal, sys
opened = [0]
def hook(event, args):
    if event == "open":
        opened[0] += 1
sys.addaudithook(hook)
signal.signal(signal.SIGUSR1, lambda *_: os.write(2, b"opened %d\\n" % opened[0]))
sys.argv = ["orchestrate", "view", "--no-open", *sys.argv[1:]]
from orchestrator.cli.main import main
main()
"""
"""``orchestrate view`` with an audit hook that counts the files it opens, told on SIGUSR1."""


def _cpu_s(pid: int) -> float:
    """The server's CPU time so far (user + system): what a request cost it, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_bytes(pid: int) -> int:
    """Bytes the server has read with read(2) and its kind (files and sockets alike; a request's own
    bytes are a few hundred)."""
    match = re.search(r"rchar: (\d+)", Path(f"/proc/{pid}/io").read_text())
    return int(match.group(1)) if match else 0


def _get(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("GET", path)
    res = conn.getresponse()
    body = res.read()
    elapsed = time.perf_counter() - start
    conn.close()
    if res.status != 200:
        raise RuntimeError(f"{path}: {res.status} {body[:200]!r}")
    return elapsed


def _peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def drop_page_cache(root: Path) -> int:
    """Drop every file under ``root`` from the page cache (written back first); returns how many."""
    count = 0
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            count += 1
    return count


def generate(base: Path) -> Path:
    results = base / "results"
    t = time.perf_counter()
    for i in range(1000):
        run = write_run(results / f"run-{i:04d}", 20)
        (run / ".lock").touch()  # every run orchestrate run made has one: the listing probes it
    big = write_run(results / "zz-big", 100_000)
    events = big / "events" / "big.jsonl"
    write_transcript(events, 100 * 1024 * 1024)
    save_index(events, events.read_bytes())  # as the run's writer saves it beside each transcript
    # The big transcript belongs to the big run's first attempt.
    lines = (big / "results.jsonl").read_bytes().split(b"\n", 1)
    first = lines[0].replace(b'"events_file":null', b'"events_file":"events/big.jsonl"')
    (big / "results.jsonl").write_bytes(first + b"\n" + lines[1])
    print(
        f"generated 1,001 runs (one of 100,000 attempts) and a 100 MB transcript in {time.perf_counter() - t:.1f} s",
        file=sys.stderr,
    )
    return results


class Server:
    """``orchestrate view`` in its own process, started cold: the results' files out of the page cache."""

    def __init__(self, results: Path) -> None:
        drop_page_cache(results)
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(results)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.startup_s = time.perf_counter() - start
        self.port = int(re.search(r":(\d+)/", line).group(1))  # type: ignore[union-attr]

    def opened(self) -> int:
        assert self.proc.stderr is not None
        self.proc.send_signal(signal.SIGUSR1)
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("the server ended")
            if line.startswith("opened "):
                return int(line.split()[1])

    def timed(self, what: str, target: float | None, *paths: str) -> dict[str, Any]:
        pid = self.proc.pid
        cpu, read, opened = _cpu_s(pid), _read_bytes(pid), self.opened()
        wall = sum(_get(self.port, p) for p in paths)
        return {
            "what": what,
            "wall_s": round(wall, 4),
            "cpu_s": round(_cpu_s(pid) - cpu, 3),
            "files_opened": self.opened() - opened,
            "bytes_read": _read_bytes(pid) - read,
            "target_s": target,
            "ok": None if target is None else wall <= target,
        }

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _show(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
        return
    if "what" not in row:
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        return
    target = row["target_s"]
    verdict = "" if target is None else f"(target <= {target:g} s) " + ("ok" if row["ok"] else "OVER TARGET")
    print(
        f"{row['what']:<58} {row['wall_s']:7.3f} s wall {row['cpu_s']:6.2f} s CPU "
        f"{row['files_opened']:6d} files {row['bytes_read'] / 1e6:8.2f} MB read  {verdict}",
        flush=True,
    )


def forget_indexes(results: Path) -> None:
    """Remove the attempt indexes a former measure left in the run directories (``.view/``): the first
    server builds them again, as on a run never viewed."""
    for run in results.iterdir():
        shutil.rmtree(run / ".view", ignore_errors=True)


def measure(results: Path, as_json: bool) -> None:
    big = "/api/runs/zz-big"
    forget_indexes(results)

    def show(row: dict[str, Any]) -> None:
        _show(row, as_json)

    show({"load_average_1m": os.getloadavg()[0], "cpus": os.cpu_count()})
    server = Server(results)
    try:
        show({"server_startup_s": round(server.startup_s, 3)})
        show(server.timed("runs page first rows, 1,001 runs (cold)", 0.5, "/api/runs?first=100"))
        show(server.timed("runs page, all 1,001 rows, right after", None, "/api/runs"))
        show(server.timed("runs page, all 1,001 rows (warm)", 0.5, "/api/runs"))
        show(
            server.timed(
                "run page first paint, 100,000 attempts (never indexed)",
                1.0,
                big,
                big + "/attempts?limit=100",
            )
        )
        _get(server.port, big + "/attempts?model=model-0")  # waits for the whole index
        show(
            server.timed(
                "run page, 100,000 attempts, a filtered page",
                1.0,
                big + "/attempts?start=50000&model=model-1",
            )
        )
        show(
            server.timed(
                "search a 100,000-attempt run (one 100 MB transcript)", None, big + "/search?q=f99999.py"
            )
        )
        show({"peak_rss_mb_after_runs_run_and_search": round(_peak_rss_mb(server.proc.pid))})
    finally:
        server.close()
    attempt = (big + "/attempts/0", big + "/attempts/0/transcript")
    server = Server(results)
    try:
        show(
            server.timed(
                "run page first paint, 100,000 attempts (cold)", 1.0, big, big + "/attempts?limit=100"
            )
        )
        _get(server.port, big + "/attempts?model=model-0")  # the whole run indexed
        show(
            server.timed(
                "run page, 100,000 attempts, filtered pages",
                1.0,
                big + "/attempts?start=50000&model=model-1&tag=hard",
                big + "/attempts?passed=false&status=timeout&start=9000",
            )
        )
        show({"peak_rss_mb_100000_attempts": round(_peak_rss_mb(server.proc.pid))})
        show(server.timed("compare 100,000 attempts with themselves", None, "/api/compare?a=zz-big&b=zz-big"))
        show({"peak_rss_mb_after_that_compare": round(_peak_rss_mb(server.proc.pid))})
    finally:
        server.close()
    server = Server(results)
    try:
        show(server.timed("attempt page, 100 MB transcript (cold)", 1.0, *attempt))
        show(
            server.timed(
                "attempt page, 100 MB transcript, a page at 50 MB (warm)", 1.0, attempt[1] + f"?at={50 << 20}"
            )
        )
        show({"peak_rss_mb_after_the_100_mb_transcript": round(_peak_rss_mb(server.proc.pid))})
    finally:
        server.close()
    # An old run's (or a copied) transcript has no index the viewer can use: it builds its own.
    saved = index_path(results / "zz-big" / "events" / "big.jsonl")
    aside = saved.with_name(saved.name + ".aside")
    saved.rename(aside)
    try:
        server = Server(results)
        try:
            show(server.timed("attempt page, 100 MB transcript, no saved index (cold)", 1.0, *attempt))
        finally:
            server.close()
    finally:
        aside.rename(saved)
    show({"load_average_1m": os.getloadavg()[0]})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this directory and keep it")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    args = parser.parse_args()
    if args.keep is not None and (args.keep / "results").is_dir():
        events = args.keep / "results" / "zz-big" / "events" / "big.jsonl"
        if not index_path(events).exists():  # kept from before the writer saved indexes
            save_index(events, events.read_bytes())
        measure(args.keep / "results", args.json)
        return
    base = args.keep or Path(tempfile.mkdtemp(prefix="view-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        measure(generate(base), args.json)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

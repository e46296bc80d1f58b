"""``orchestrate compare``: two runs side by side, paired by (case, model, repeat), as pure functions over
their flat rows (:func:`~orchestrator.results.records.iter_rows` reads them). One aggregation,
:func:`compare_sorted`, serves the command line and the viewer: a merge-join of two streams of final rows
sorted by key, which keeps a few numbers a pair rather than the rows, so that its memory stays small
whatever the runs' size when its input is streamed (the viewer streams it out of its SQLite index)."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from orchestrator.results.records import RESULTS, Row, gc_paused, iter_rows
from orchestrator.results.report import pct, pct_delta, read_manifest, secs, table, usd
from orchestrator.results.summary import percentile
from orchestrator.stats import clustered_paired_test
from orchestrator.status import Status


def final_rows(rows: Iterable[Row]) -> dict[tuple[str, str, int], Row]:
    """The final row of each (case, model, repeat); when a forced resume left finals under several
    config hashes, the last written wins (it is the newest result)."""
    out: dict[tuple[str, str, int], Row] = {}
    for r in rows:
        if r.final:
            out[(r.case_id, r.model_id, r.repeat)] = r
    return out


def sorted_finals(rows: Iterable[Row]) -> list[Row]:
    """The final rows of a run (:func:`final_rows`) in the order :func:`compare_sorted` pairs them."""
    return sorted(final_rows(rows).values(), key=pairing_order)


def pairing_order(r: Row) -> tuple[str, str, int]:
    """The order pairs are listed in: by model, then case, then repeat."""
    return (r.model_id, r.case_id, r.repeat)


def _merge(rows_a: Iterable[Row], rows_b: Iterable[Row]) -> Iterator[tuple[Row | None, Row | None]]:
    """Two streams of final rows, each in :func:`pairing_order` with one row a key, joined on the key:
    ``(a, b)`` for a pair, ``(a, None)`` or ``(None, b)`` for a key of one side only."""
    a, b = iter(rows_a), iter(rows_b)
    ra, rb = next(a, None), next(b, None)
    last_a = last_b = None
    while ra is not None or rb is not None:
        ka = None if ra is None else pairing_order(ra)
        kb = None if rb is None else pairing_order(rb)
        if ka is not None and kb is not None and ka == kb:
            yield ra, rb
        elif kb is None or (ka is not None and ka < kb):
            yield ra, None
            kb = None
        else:
            yield None, rb
            ka = None
        if ka is not None:
            if last_a is not None and ka <= last_a:
                raise ValueError(f"run A's final rows are not in pairing order at {ka}")
            last_a, ra = ka, next(a, None)
        if kb is not None:
            if last_b is not None and kb <= last_b:
                raise ValueError(f"run B's final rows are not in pairing order at {kb}")
            last_b, rb = kb, next(b, None)


class _Columns:
    """What the figures and the statistics need of each pair, in pairing order, as compact arrays
    (~45 bytes a pair, plus one entry per distinct case) rather than the two rows (kilobytes)."""

    def __init__(self) -> None:
        self.cost_a, self.cost_b = array("d"), array("d")
        self.duration_a, self.duration_b = array("d"), array("d")
        self.passed_a, self.passed_b, self.graded = bytearray(), bytearray(), bytearray()
        self.cluster = array("q")
        """Per pair, its case's number in order of first appearance among the graded pairs (the
        bootstrap's cluster over all models); -1 for a pair with an infrastructure error."""
        self._cases: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.graded)

    def numbers(self) -> tuple[array[float], array[float], array[float], array[float]]:
        """Cost A, cost B, duration A, duration B: the order the paired test takes them in."""
        return self.cost_a, self.cost_b, self.duration_a, self.duration_b

    def add(self, ra: Row, rb: Row) -> None:
        self.cost_a.append(ra.cost_usd)
        self.cost_b.append(rb.cost_usd)
        self.duration_a.append(ra.duration_s)
        self.duration_b.append(rb.duration_s)
        self.passed_a.append(bool(ra.passed))
        self.passed_b.append(bool(rb.passed))
        graded = not (Status(ra.status).is_infra or Status(rb.status).is_infra)
        self.graded.append(graded)
        self.cluster.append(self._cases.setdefault(ra.case_id, len(self._cases)) if graded else -1)


class _Group:
    """One model's pairs (a run of consecutive pairs: they come in model order), or all of them: the
    range they hold in the columns, and what is counted as they pass."""

    def __init__(self, start: int) -> None:
        self.start = self.end = start
        self.config_changed = 0
        self.flips: dict[str, int] = {}
        self.float_cost = [False, False]
        """Whether a cost of side A (B) was not an int: a sum of ints stays an int, as ``sum`` keeps it."""

    def add(self, ra: Row, rb: Row) -> None:
        self.end += 1
        self.config_changed += ra.config_hash != rb.config_hash
        if ra.outcome != rb.outcome:
            change = f"{ra.outcome}->{rb.outcome}"
            self.flips[change] = self.flips.get(change, 0) + 1
        self.float_cost[0] |= type(ra.cost_usd) is not int
        self.float_cost[1] |= type(rb.cost_usd) is not int

    def _side(
        self, passed: bytearray, cost: array[float], duration: array[float], floats: bool
    ) -> dict[str, Any]:
        n = self.end - self.start
        total = sum(islice(cost, self.start, self.end))
        return {
            "pass_rate": passed.count(1, self.start, self.end) / n if n else None,
            "cost_usd": total if floats else int(total),
            "duration_p50": percentile(sorted(islice(duration, self.start, self.end)), 0.5),
        }

    def figures(self, c: _Columns) -> dict[str, Any]:
        a = self._side(c.passed_a, c.cost_a, c.duration_a, self.float_cost[0])
        b = self._side(c.passed_b, c.cost_b, c.duration_b, self.float_cost[1])
        return {
            "paired": self.end - self.start,
            "config_changed": self.config_changed,
            **{f"{k}_a": v for k, v in a.items()},
            **{f"{k}_b": v for k, v in b.items()},
            **{f"{k}_delta": _delta(a[k], b[k]) for k in a},
            "flips": dict(sorted(self.flips.items())),
        }

    def statistics(self, c: _Columns, *, renumber: bool, seed: int = 0) -> dict[str, Any]:
        """McNemar's exact test and the paired bootstrap intervals (pass rate, cost and duration, B minus
        A; :func:`orchestrator.stats.clustered_paired_test`) over the pairs where neither attempt ended
        in an infrastructure error, plus the sentence that says whether the difference is significant at
        5%. ``renumber``: the cases' numbers restart at 0 for this group (one model's: its cases come
        one after the other, each case's pairs together)."""
        import numpy as np

        span = slice(self.start, self.end)
        graded = np.frombuffer(c.graded, dtype=np.bool_)[span]
        cluster = np.frombuffer(c.cluster, dtype=np.int64)[span][graded].astype(np.intp)
        if renumber and len(cluster):
            cluster = np.concatenate(([0], np.cumsum(cluster[1:] != cluster[:-1]))).astype(np.intp)
        cost_a, cost_b, duration_a, duration_b = (
            np.frombuffer(x, dtype=np.float64)[span][graded] for x in c.numbers()
        )
        test = clustered_paired_test(
            np.frombuffer(c.passed_a, dtype=np.bool_)[span][graded],
            np.frombuffer(c.passed_b, dtype=np.bool_)[span][graded],
            cost_a,
            cost_b,
            duration_a,
            duration_b,
            cluster,
            seed=seed,
        )
        infra = self.end - self.start - len(cluster)
        return {**test.as_dict(), "infra_pairs": infra, "sentence": test.sentence()}


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


class _Listed:
    """A stream of items kept in part: those from the ``start``-th on, at most ``limit`` (all when None),
    and how many there were."""

    def __init__(self, start: int = 0, limit: int | None = None) -> None:
        self.start, self.limit = start, limit
        self.count = 0
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        if self.start <= self.count and (self.limit is None or self.count < self.start + self.limit):
            self.items.append(item)
        self.count += 1


class _Smallest(_Listed):
    """The first ``limit`` of a stream's items once sorted (all, sorted, when None), and their number:
    at most twice as many held at once."""

    def add(self, item: Any) -> None:
        self.items.append(item)
        self.count += 1
        if self.limit is not None and len(self.items) >= 2 * self.limit + 1024:
            self.items = sorted(self.items)[: self.limit]

    def sorted(self) -> list[Any]:
        return sorted(self.items)[: self.limit]


def _change(ra: Row, rb: Row) -> dict[str, Any]:
    return {
        "case_id": ra.case_id,
        "model_id": ra.model_id,
        "repeat": ra.repeat,
        "change": f"{ra.outcome}->{rb.outcome}",
        "status_a": ra.status,
        "status_b": rb.status,
        "error_a": ra.error,
        "error_b": rb.error,
        "config": "same" if ra.config_hash == rb.config_hash else "changed",
        "cost_delta": rb.cost_usd - ra.cost_usd,
        "duration_delta": rb.duration_s - ra.duration_s,
    }


def compare_sorted(
    finals_a: Iterable[Row], finals_b: Iterable[Row], *, changes_from: int = 0, limit: int | None = None
) -> dict[str, Any]:
    """Pairs the final rows of two runs, each given once a key in :func:`pairing_order` (as
    :func:`sorted_finals` or the viewer's index stream them), by (case, model, repeat) -- the config hash
    may differ and is reported -- and lists every pair whose outcome (pass, fail, error) changed, with
    per-model and total pass-rate (errors count against it, as in summarize), cost and median-duration
    deltas, and (``tests``) per model and in total the paired statistics.

    One pass over the streams: what stays in memory is a few numbers a pair (:class:`_Columns`), not the
    rows. With ``limit``, ``changes`` holds at most ``limit`` changed pairs from the ``changes_from``-th
    on and ``only_a``/``only_b`` the first ``limit`` keys, and ``changes_count``, ``only_a_count`` and
    ``only_b_count`` say how many there are."""
    columns = _Columns()
    total = _Group(0)
    by_model: dict[str, _Group] = {}
    changes = _Listed(changes_from, limit)
    only = (_Smallest(0, limit), _Smallest(0, limit))
    group: _Group | None = None
    for ra, rb in _merge(finals_a, finals_b):
        if ra is None or rb is None:
            r, side = (rb, only[1]) if ra is None else (ra, only[0])
            assert r is not None
            side.add((r.case_id, r.model_id, r.repeat))
            continue
        if group is None or ra.model_id not in by_model:  # the next model's pairs begin
            group = by_model[ra.model_id] = _Group(len(columns))
        columns.add(ra, rb)
        total.add(ra, rb)
        group.add(ra, rb)
        if ra.outcome != rb.outcome:
            changes.add(_change(ra, rb))
    out: dict[str, Any] = {
        "totals": total.figures(columns),
        "by_model": {m: g.figures(columns) for m, g in by_model.items()},
        "tests": {
            "totals": total.statistics(columns, renumber=False),
            "by_model": {m: g.statistics(columns, renumber=True) for m, g in by_model.items()},
        },
        "changes": changes.items,
        "only_a": [list(k) for k in only[0].sorted()],
        "only_b": [list(k) for k in only[1].sorted()],
    }
    if limit is not None:
        out.update(changes_count=changes.count, only_a_count=only[0].count, only_b_count=only[1].count)
    return out


def compare_rows(rows_a: Iterable[Row], rows_b: Iterable[Row]) -> dict[str, Any]:
    """:func:`compare_sorted` of two runs' rows in any order (their final rows are picked and sorted)."""
    return compare_sorted(sorted_finals(rows_a), sorted_finals(rows_b))


def build_comparison(run_a: Path, run_b: Path) -> dict[str, Any]:
    """What ``orchestrate compare`` shows: both runs' identities plus :func:`compare_rows`."""
    out: dict[str, Any] = {}
    for label, run_dir in (("a", run_a), ("b", run_b)):
        manifest = read_manifest(run_dir)
        out[label] = {"run_id": manifest.get("run_id") or run_dir.name, "run_dir": str(run_dir)}
    with gc_paused():  # the final rows pile up in a dict: no collector passes over them
        return {**out, **compare_rows(iter_rows(run_a / RESULTS), iter_rows(run_b / RESULTS))}


_COMPARE_HEADERS: tuple[str, ...] = ("", "paired", "pass A", "pass B", "delta", "cost A", "cost B", "delta")
_COMPARE_HEADERS += ("p50 A", "p50 B", "delta", "flips", "config changed")


def _compare_line(name: str, g: Mapping[str, Any]) -> list[str]:
    flips = ", ".join(f"{k} {v}" for k, v in g["flips"].items()) or "-"
    return [
        name,
        f"{g['paired']:,}",
        pct(g["pass_rate_a"]),
        pct(g["pass_rate_b"]),
        pct_delta(g["pass_rate_delta"]),
        usd(g["cost_usd_a"]),
        usd(g["cost_usd_b"]),
        usd(g["cost_usd_delta"], sign=True),
        secs(g["duration_p50_a"]),
        secs(g["duration_p50_b"]),
        secs(g["duration_p50_delta"], sign=True),
        flips,
        f"{g['config_changed']:,}",
    ]


def significance_lines(tests: Mapping[str, Any]) -> list[str]:
    """The paired statistics in words, total first, then by model, with the cost and duration deltas."""
    lines = ["", "paired test over graded pairs (infrastructure errors left out), B minus A:"]
    groups = [("total", tests["totals"])] + [(f"model {m}", t) for m, t in tests["by_model"].items()]
    for name, t in groups:
        lines.append(f"  {name}: {t['sentence']}")
        if t["pairs"]:
            lines.append(
                f"    mean cost per pair {_ci(t['cost_delta'], t['cost_delta_ci'], usd)},"
                f" mean duration per pair {_ci(t['duration_delta'], t['duration_delta_ci'], secs)}"
            )
    return lines


def _ci(value: float, ci: Sequence[float | None], fmt: Callable[..., str]) -> str:
    low, high = ci
    interval = (
        "" if low is None or high is None else f" (95% CI {fmt(low, sign=True)} to {fmt(high, sign=True)})"
    )
    return f"{fmt(value, sign=True)}{interval}"


def format_comparison(cmp: Mapping[str, Any], *, max_unpaired: int = 20) -> str:
    """The comparison as text: both runs, the per-model table, then every changed pair."""
    a, b = cmp["a"], cmp["b"]
    lines = [f"A: run {a['run_id']}  {a['run_dir']}", f"B: run {b['run_id']}  {b['run_dir']}", ""]
    rows = [_compare_line("total", cmp["totals"])]
    rows += [_compare_line(f"model {m}", g) for m, g in cmp["by_model"].items()]
    lines += table(_COMPARE_HEADERS, rows)
    lines += significance_lines(cmp["tests"])
    for label, keys in (("only in A", cmp["only_a"]), ("only in B", cmp["only_b"])):
        if keys:
            shown = ", ".join(f"{c}/{m}/{r}" for c, m, r in keys[:max_unpaired])
            more = f" (+{len(keys) - max_unpaired} more)" if len(keys) > max_unpaired else ""
            lines.append(f"{label}: {len(keys)} case/model/repeat: {shown}{more}")
    changes = cmp["changes"]
    lines.append("")
    if not changes:
        lines.append("no outcome changed between the paired attempts")
        return "\n".join(lines)
    lines.append(f"{len(changes)} changed outcome(s):")
    lines += table(
        (
            "case",
            "model",
            "repeat",
            "change",
            "status A",
            "status B",
            "cost delta",
            "duration delta",
            "config",
        ),
        (
            [
                c["case_id"],
                c["model_id"],
                str(c["repeat"]),
                c["change"],
                c["status_a"],
                c["status_b"],
                usd(c["cost_delta"], sign=True),
                secs(c["duration_delta"], sign=True),
                c["config"],
            ]
            for c in changes
        ),
        align="llrlllrrl",
    )
    return "\n".join(lines)

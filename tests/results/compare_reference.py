"""Two runs that differ in every way ``orchestrate compare`` tells apart, and what compare answered for
them before it streamed (the figures computed from the records' dicts, the old way: every final row held,
lists summed by ``sum``, the statistics from :func:`orchestrator.stats.paired_test` on per-pair lists).
The streaming compare must give the same answer to the last bit."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.summary import percentile
from orchestrator.stats import paired_test
from orchestrator.status import Status

STATUSES = ("completed", "completed", "completed", "timeout", "aborted", "infra_error", "cancelled")


def varied_records(
    run_id: str, cases: int, *, seed: int, models: int = 3, repeats: int = 2
) -> list[dict[str, Any]]:
    """Final records of ``cases`` x ``models`` x ``repeats`` keys (some left out, so that each run has
    keys the other lacks), a few retried (a non-final try, or a forced resume's second final under
    another config hash: the last written wins), with errors, config hashes that differ between runs,
    and costs and durations as ints and floats."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for case in range(cases):
        for model in range(models):
            for repeat in range(repeats):
                if rng.random() < 0.04:
                    continue  # only in the other run
                tries = 2 if rng.random() < 0.1 else 1
                for attempt in range(1, tries + 1):
                    out.append(_record(run_id, rng, case, model, repeat, attempt, final=attempt == tries))
                if rng.random() < 0.03:  # a forced resume wrote a second final, under another config
                    again = _record(run_id, rng, case, model, repeat, 1, final=True)
                    again["config_hash"] = "resumed-config"
                    out.append(again)
    rng.shuffle(out)  # results.jsonl is in the order attempts ended, not by key
    return out


def _record(
    run_id: str, rng: random.Random, case: int, model: int, repeat: int, attempt: int, *, final: bool
) -> dict[str, Any]:
    status = rng.choice(STATUSES) if final else "infra_error"
    passed = None if status in ("infra_error", "cancelled") else rng.random() < 0.6
    ints = rng.random() < 0.2
    return {
        "run_id": run_id,
        "case_id": f"case-{case:03d}" + ("-é" if case % 7 == 0 else ""),
        "model_id": f"model-{'abc'[model]}",
        "repeat": repeat,
        "attempt": attempt,
        "final": final,
        "config_hash": "cfg-1" if rng.random() < 0.8 else "cfg-2",
        "status": status,
        "passed": passed,
        "error_class": "infra" if status == "infra_error" else None,
        "error": "host died" if status == "infra_error" else None,
        "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T00:01:00Z",
        "duration_s": rng.randint(1, 90) if ints else round(rng.uniform(0.5, 120.0), 3),
        "metrics": {"cost_usd": rng.randint(0, 2) if ints else rng.uniform(0.0, 0.3)},
        "check": None
        if passed is None
        else {"passed": passed, "exit_code": 0, "timed_out": False, "duration": 1.0, "output_tail": ""},
        "tags": ["t"],
    }


def write_records(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_bytes(orjson.dumps({"schema_version": 1, "run_id": run_dir.name}))
    with (run_dir / "results.jsonl").open("wb") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")
    return run_dir


# ------------------------------------------------------------------------- the answer, from the records


def _outcome(r: dict[str, Any]) -> str:
    if Status(r["status"]).is_infra or r.get("error_class") is not None:
        return "error"
    return "pass" if r.get("passed") else "fail"


def _cost(r: dict[str, Any]) -> Any:
    return r["metrics"].get("cost_usd", 0.0)


def _figures(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    n = len(pairs)
    sides = {}
    for k, side in (("a", [p[0] for p in pairs]), ("b", [p[1] for p in pairs])):
        sides[k] = (
            sum(1 for r in side if r.get("passed")) / n if n else None,
            sum(_cost(r) for r in side),
            percentile(sorted(r["duration_s"] for r in side), 0.5),
        )
    flips: dict[str, int] = {}
    for ra, rb in pairs:
        if _outcome(ra) != _outcome(rb):
            flips[f"{_outcome(ra)}->{_outcome(rb)}"] = flips.get(f"{_outcome(ra)}->{_outcome(rb)}", 0) + 1
    names = ("pass_rate", "cost_usd", "duration_p50")
    out: dict[str, Any] = {
        "paired": n,
        "config_changed": sum(a["config_hash"] != b["config_hash"] for a, b in pairs),
    }
    for k in ("a", "b"):
        out.update({f"{name}_{k}": v for name, v in zip(names, sides[k], strict=True)})
    for i, name in enumerate(names):
        a, b = sides["a"][i], sides["b"][i]
        out[f"{name}_delta"] = None if a is None or b is None else b - a
    out["flips"] = dict(sorted(flips.items()))
    return out


def _tests(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    graded = [(a, b) for a, b in pairs if not (Status(a["status"]).is_infra or Status(b["status"]).is_infra)]
    firsts, seconds = [a for a, _ in graded], [b for _, b in graded]
    test = paired_test(
        [bool(r.get("passed")) for r in firsts],
        [bool(r.get("passed")) for r in seconds],
        [_cost(r) for r in firsts],
        [_cost(r) for r in seconds],
        [r["duration_s"] for r in firsts],
        [r["duration_s"] for r in seconds],
        [r["case_id"] for r in firsts],
    )
    return {**test.as_dict(), "infra_pairs": len(pairs) - len(graded), "sentence": test.sentence()}


def expected_comparison(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``compare_rows`` of the two runs' rows answered before compare streamed."""
    finals = []
    for records in (records_a, records_b):
        last = {(r["case_id"], r["model_id"], r["repeat"]): r for r in records if r["final"]}
        finals.append(last)
    a, b = finals
    keys = sorted(a.keys() & b.keys(), key=lambda k: (k[1], k[0], k[2]))
    pairs = [(a[k], b[k]) for k in keys]
    models: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for ra, rb in pairs:
        models.setdefault(ra["model_id"], []).append((ra, rb))
    changed = []
    for ra, rb in pairs:
        if _outcome(ra) == _outcome(rb):
            continue
        changed.append(
            dict(
                case_id=ra["case_id"],
                model_id=ra["model_id"],
                repeat=ra["repeat"],
                change=f"{_outcome(ra)}->{_outcome(rb)}",
                status_a=ra["status"],
                status_b=rb["status"],
                error_a=ra.get("error"),
                error_b=rb.get("error"),
                config="same" if ra["config_hash"] == rb["config_hash"] else "changed",
                cost_delta=_cost(rb) - _cost(ra),
                duration_delta=rb["duration_s"] - ra["duration_s"],
            )
        )
    return {
        "totals": _figures(pairs),
        "by_model": {m: _figures(p) for m, p in models.items()},
        "tests": {"totals": _tests(pairs), "by_model": {m: _tests(p) for m, p in models.items()}},
        "changes": changed,
        "only_a": [list(k) for k in sorted(a.keys() - b.keys())],
        "only_b": [list(k) for k in sorted(b.keys() - a.keys())],
    }

"""results.jsonl in columns: the flat rows and the DataFrame of :func:`orchestrator.results.store.load`, and
``results.parquet``, a columnar cache of those rows that the run's writer leaves when the run ends.

results.jsonl stays the one source of truth. The cache records what it was built from (results.jsonl's
size, ``mtime_ns`` and a hash of its last 64 KiB, the record schema version and the columns); ``load()``
reads it only when all of these match the file as it is now, and otherwise parses results.jsonl as if the
cache were not there (a resumed run appends, so its old cache is stale until its writer rewrites it).
Nothing here repairs a file: only :func:`write_cache` writes, and only the cache.

A cached column gives the very pandas column that the values parsed from results.jsonl give: a column
whose values are all of one JSON kind (str, int, float or bool, each with None, or only None) is stored
as that Arrow type, whose ``to_pandas`` is what pandas infers from such values (int with None: float64;
bool with None: object; only None: object); any other column (``tool_usage``'s dicts, the lists, mixed
kinds) holds one JSON text per value, decoded back to equal Python values that pandas then infers from,
as it does from the parsed lines. ``started_at``/``ended_at`` stay ISO texts, converted by the same call
either way. The cache is an ordinary parquet file: other tools can read it (JSON columns as text).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.records import (
    COLUMNS,
    RESULTS,
    SCHEMA_VERSION,
    RecordReader,
    ResultsError,
    Row,
    flat_values,
    gc_paused,
    read_rows,
)

log = logging.getLogger(__name__)

CACHE = "results.parquet"
FORMAT = 1
"""The cache layout (what is stored and how); a cache of another format is ignored."""
_META = b"orchestrator.results.columnar"
_TAIL = 64 * 1024
_CHUNK = 16_384
"""Lines flattened at a time when the cache is built: the whole file never sits in memory as rows."""
_ARROW_KINDS = {str: "string", int: "int64", float: "float64", bool: "bool_"}


def _arrow() -> Any:
    """pyarrow (untyped), or None when it is not installed: the cache is then neither written nor read."""
    try:
        importlib.import_module("pyarrow.parquet")
        importlib.import_module("pyarrow.compute")
        return importlib.import_module("pyarrow")
    except ImportError:
        return None


def _source(path: Path) -> dict[str, Any] | None:
    """What identifies results.jsonl's content cheaply: size, mtime_ns and a hash of its tail (appends and
    truncations change the size; a rewrite of the same size within one mtime tick still changes the
    tail, where a resume or a repair writes)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            fh.seek(max(0, st.st_size - _TAIL))
            tail = fh.read(_TAIL)
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "tail_sha256": hashlib.sha256(tail).hexdigest()}


# ------------------------------------------------------------------------------ rows -> Arrow


@dataclass(frozen=True)
class _Piece:
    """Rows as an Arrow table in :data:`COLUMNS` order; ``json`` names the columns held as JSON texts."""

    table: Any
    json: frozenset[str]


def _column(pa: Any, values: Sequence[Any]) -> tuple[Any, bool]:
    """One column as an Arrow array, and whether it holds JSON texts."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return pa.nulls(len(values)), False
    if len(kinds) == 1:
        arrow_type = _ARROW_KINDS.get(kinds.pop())
        if arrow_type is not None:
            with contextlib.suppress(OverflowError, pa.ArrowException):  # an int beyond int64
                return pa.array(values, type=getattr(pa, arrow_type)()), False
    return pa.array(list(map(orjson.dumps, values)), type=pa.string()), True


def _piece(pa: Any, rows: Sequence[Row]) -> _Piece:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS]
    arrays, json = [], set()
    for name, values in zip(COLUMNS, columns, strict=True):
        array, is_json = _column(pa, values)
        arrays.append(array)
        if is_json:
            json.add(name)
    return _Piece(pa.Table.from_arrays(arrays, names=COLUMNS), frozenset(json))


def _as_json(pa: Any, column: Any) -> Any:
    return pa.array(list(map(orjson.dumps, column.to_pylist())), type=pa.string())


def _concat(pa: Any, pieces: Sequence[_Piece]) -> _Piece | None:
    """One piece of several (chunks of a file, runs), or None when they hold no row. A column typed
    differently by two pieces (str in one, int in the other) becomes JSON in all, as it holds mixed
    kinds; an all-None column takes the type of the others."""
    pieces = [p for p in pieces if p.table.num_rows]
    if len(pieces) <= 1:
        return pieces[0] if pieces else None
    json = set().union(*(p.json for p in pieces))
    types: dict[str, Any] = {}
    for name in COLUMNS:
        if name not in json:
            seen = {p.table.schema.field(name).type for p in pieces} - {pa.null()}
            if len(seen) > 1:
                json.add(name)
            elif seen:
                types[name] = seen.pop()
    tables = []
    for p in pieces:
        columns = []
        for name in COLUMNS:
            column = p.table.column(name)
            if name in json and name not in p.json:
                column = _as_json(pa, column)
            elif name in types and column.type != types[name]:
                column = column.cast(types[name])
            columns.append(column)
        tables.append(pa.Table.from_arrays(columns, names=COLUMNS))
    return _Piece(pa.concat_tables(tables), frozenset(json))


def _decode(pa: Any, column: Any) -> list[Any]:
    """The Python values of a JSON column, decoded in one call (joined in C into one JSON array)."""
    values = column.cast(pa.large_string()).combine_chunks()
    lists = pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), values)
    joined = pa.compute.binary_join(lists, pa.scalar(",", pa.large_string()))[0]
    decoded: list[Any] = orjson.loads(b"[" + joined.as_buffer().to_pybytes() + b"]")
    return decoded


# ------------------------------------------------------------------------------------ the cache


def write_cache(run_dir: Path) -> Path | None:
    """Build ``run_dir/results.parquet`` from results.jsonl, atomically (temp file, fsync, rename). For
    the end of a run: it never raises for a cache that cannot be made (pyarrow missing, a line that is not
    a record, disk full, read-only directory), it logs why and returns None; the run does not depend on
    it. Returns the cache's path."""
    pa = _arrow()
    if pa is None:
        log.debug("%s: pyarrow is not installed: no %s", run_dir, CACHE)
        return None
    path = Path(run_dir) / CACHE
    results = Path(run_dir) / RESULTS
    tmp = path.with_name(f".{CACHE}.{os.getpid()}.tmp")
    start = time.perf_counter()
    try:
        source = _source(results)
        if source is None:
            log.debug("%s: no %s: no %s", run_dir, RESULTS, CACHE)
            return None
        piece = _build(pa, results)
        if piece is None:
            return None
        if _source(results) != source:
            log.warning("%s changed while %s was built from it: not written", results, CACHE)
            return None
        info = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "columns": COLUMNS,
            "json": sorted(piece.json),
            "rows": piece.table.num_rows,
            "source": source,
        }
        table = piece.table.replace_schema_metadata({_META: orjson.dumps(info)})
        try:
            with open(tmp, "wb") as fh:
                pa.parquet.write_table(table, fh, compression="zstd", write_page_checksum=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk must not also keep a half-written file
                tmp.unlink()
            raise
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except Exception as exc:
        log.warning("%s: cannot write %s (%s); load() reads %s instead", run_dir, CACHE, exc, RESULTS)
        return None
    log.info("%s: wrote %s (%d rows) in %.2f s", run_dir, CACHE, info["rows"], time.perf_counter() - start)
    return path


def _build(pa: Any, results: Path) -> _Piece | None:
    """All of results.jsonl as one piece, read a chunk at a time; None (logged) unless every line is a
    complete record: a torn or damaged file is left to load()'s reading of results.jsonl, which says so."""
    pieces: list[_Piece] = []
    rows: list[Row] = []
    reader = RecordReader(results)
    with gc_paused():
        try:
            for row in reader.read(flat_values):
                rows.append(row)
                if len(rows) == _CHUNK:
                    pieces.append(_piece(pa, rows))
                    rows = []
        except ResultsError as exc:
            log.warning("%s (no %s)", exc, CACHE)
            return None
        if reader.torn:
            log.warning("%s: a torn last line: no %s", results, CACHE)
            return None
        pieces.append(_piece(pa, rows))
        whole = _concat(pa, pieces)
    return pieces[-1] if whole is None else whole  # no row: the empty piece still makes a cache


def _read(pa: Any, run_dir: Path) -> _Piece | None:
    """A run's cached rows, or None when there is no cache, it is unreadable, or it was not built from
    results.jsonl as it is now."""
    path = run_dir / CACHE
    try:
        with pa.parquet.ParquetFile(path, page_checksum_verification=True) as pf:
            info = orjson.loads((pf.schema_arrow.metadata or {})[_META])
            if not (
                info["format"] == FORMAT
                and info["schema_version"] == SCHEMA_VERSION
                and info["columns"] == COLUMNS
                and info["source"] == _source(run_dir / RESULTS)
            ):
                log.debug("%s: stale (results.jsonl or the schema changed since): not used", path)
                return None
            table = pf.read()
        if table.column_names != COLUMNS or table.num_rows != info["rows"]:
            raise ValueError(f"{table.num_rows} rows, columns {table.column_names}")
        json = frozenset(info["json"])
    except FileNotFoundError:
        return None
    except Exception as exc:  # garbage, truncated, another program's file: the jsonl is the truth
        log.debug("%s: unreadable (%r): not used", path, exc)
        return None
    log.debug("%s: using it for %s", path, RESULTS)
    return _Piece(table, json)


# ------------------------------------------------------------------------------------- frames


def frame(run_dirs: Sequence[Path], *, all_attempts: bool = False) -> Any:
    """The DataFrame of :func:`orchestrator.results.store.load` for these run directories: from their caches
    where they are current, from results.jsonl otherwise; the same frame either way."""
    pd = importlib.import_module("pandas")
    with gc_paused():
        out = _cached_frame(pd, run_dirs, all_attempts)
        if out is None:
            out = _jsonl_frame(pd, run_dirs, all_attempts)
    return finish_frame(pd, out)


def _jsonl_frame(pd: Any, run_dirs: Sequence[Path], all_attempts: bool) -> Any:
    return rows_frame(pd, [row for run_dir in run_dirs for row in read_rows(run_dir / RESULTS)], all_attempts)


def rows_frame(pd: Any, rows: Sequence[Row], all_attempts: bool) -> Any:
    """The DataFrame of flat rows as :func:`frame` makes it from results.jsonl, before its datetime
    columns are converted (:func:`finish_frame`)."""
    if not all_attempts:
        rows = [row for row in rows if row.final]
    # Transposed in C, while the collector is off, so that it never walks the rows.
    with gc_paused():
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS]
        return pd.DataFrame(dict(zip(COLUMNS, columns, strict=True)), columns=COLUMNS)


def finish_frame(pd: Any, out: Any) -> Any:
    """``started_at``/``ended_at`` as UTC datetimes: the last step of every frame."""
    for column in ("started_at", "ended_at"):
        out[column] = pd.to_datetime(out[column], utc=True, format="ISO8601")
    return out


def _cached_frame(pd: Any, run_dirs: Sequence[Path], all_attempts: bool) -> Any:
    """None unless at least one run has a current cache; runs without one are parsed and joined in."""
    pa = _arrow()
    if pa is None:
        return None
    cached = [_read(pa, run_dir) for run_dir in run_dirs]
    if not any(cached):
        return None
    try:
        pieces = [
            piece if piece is not None else _piece(pa, read_rows(run_dir / RESULTS))
            for run_dir, piece in zip(run_dirs, cached, strict=True)
        ]
        return _to_pandas(pd, pa, _concat(pa, pieces), all_attempts)
    except ResultsError:  # a damaged results.jsonl, raised as it would be without caches
        raise
    except Exception as exc:
        log.warning("cannot use the cached rows (%r): reading %s instead", exc, RESULTS)
        return None


def _to_pandas(pd: Any, pa: Any, piece: _Piece | None, all_attempts: bool) -> Any:
    empty = pd.DataFrame({name: () for name in COLUMNS}, columns=COLUMNS)
    if piece is None:
        return empty
    table = piece.table
    if not all_attempts:
        final = table.column("final")
        if final.type == pa.bool_():
            mask = final.fill_null(False)
        else:  # truthiness, as the rows are filtered when read from results.jsonl
            values = _decode(pa, final) if "final" in piece.json else final.to_pylist()
            mask = pa.array([bool(v) for v in values], pa.bool_())
        table = table.filter(mask)
    rows = table.num_rows
    if rows == 0:
        return empty
    data: dict[str, Any] = {}
    for name in COLUMNS:
        column = table.column(name)
        if name in piece.json:
            data[name] = _decode(pa, column)
        elif column.null_count == rows:
            data[name] = [None] * rows  # as pandas infers from only None (Arrow would give float64 NaN)
        else:
            data[name] = column.to_pandas()
    return pd.DataFrame(data, columns=COLUMNS)

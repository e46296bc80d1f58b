"""Result files of runs: the record schema, the writer, and what notebooks read.

``from orchestrator.results import load, live`` is the notebook's entry point: :func:`load` reads runs into
a DataFrame, :func:`live` follows a run while it goes."""

from orchestrator.results.live import live
from orchestrator.results.store import load

__all__ = ["live", "load"]

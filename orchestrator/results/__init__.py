"""Result files of runs: the record schema, the writer, and what notebooks read.

``from orchestrator.results import load`` is the notebook's entry point."""

from orchestrator.results.store import load

__all__ = ["load"]

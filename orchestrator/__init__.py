"""The eval orchestrator: suites of cases x models x repeats, run on extension hosts, graded, recorded."""

__version__ = "0.1.0"

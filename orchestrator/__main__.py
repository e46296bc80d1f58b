"""``python -m orchestrator`` is ``orchestrate``."""

from .cli import main

main()

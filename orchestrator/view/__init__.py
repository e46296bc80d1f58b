"""``orchestrate view``: a web viewer of run directories, live while a run is in progress (needs the
``view`` extra: Starlette and uvicorn)."""

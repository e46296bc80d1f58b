"""notebooks/analysis.ipynb runs top to bottom against fresh runs of the default suite on the simulator:
A as configs/suite.yaml is, B with two cases made to regress (a wrong answer written for them)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.runs import ROOT, SUITE, regressed_suite, run_argv

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


@pytest.fixture
def two_runs(tmp_path: Path) -> Iterator[Path]:
    """results/a-baseline and results/b-regressed, two repeats each, run side by side."""
    results = tmp_path / "results"
    procs = []
    start = time.monotonic()
    try:
        for run_id, suite in (("a-baseline", SUITE), ("b-regressed", regressed_suite(tmp_path))):
            argv = [*run_argv(suite, results, run_id, "--repeats", "2", "--slots", "18", "-q")]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
        print(f"two runs in {time.monotonic() - start:.1f} s")
        yield results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    assert all(c.outputs == [] and c.execution_count is None for c in code), (
        "strip the outputs before committing"
    )


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_notebook_runs_on_fresh_results(two_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_RESULTS", str(two_runs))  # the kernel inherits the environment
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    # The kernel's connection file and IPython's profile go to the test's own directory, removed with it.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(two_runs.parent / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(two_runs.parent / "ipython"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.monotonic()
    # A cell that raises fails the test (CellExecutionError) with the cell and its traceback.
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(two_runs)}}
    ).execute()
    elapsed = time.monotonic() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5, "pass rate, pass@k, cost, duration, case x model"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"A: {two_runs / 'a-baseline'}" in text and f"B: {two_runs / 'b-regressed'}" in text
    # Two cases x two models x two repeats went from pass to fail: p = 2 / 2**8.
    assert "flips: pass->fail 8" in text
    assert "McNemar exact p = 0.00781 (0 fail->pass, 8 pass->fail): significant at 5%" in text
    print(f"notebook executed in {elapsed:.1f} s")

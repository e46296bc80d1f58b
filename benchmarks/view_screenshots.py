"""Screenshots of the viewer's pages in headless Chromium (Debian's ``chromium``), to look at.

    python benchmarks/view_screenshots.py RESULTS_DIR OUT_DIR [RUN [ATTEMPT]]

Starts ``orchestrate view`` on a free loopback port, saves runs.png, run.png, attempt.png (and
compare.png when RESULTS_DIR holds two runs) under OUT_DIR, and stops the server.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.view.browser import screenshot, serving  # noqa: E402


def main() -> None:
    results, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(p.name for p in results.iterdir() if (p / "manifest.json").is_file())
    run = sys.argv[3] if len(sys.argv) > 3 else runs[0]
    attempt = sys.argv[4] if len(sys.argv) > 4 else "0"
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is not installed")
    with serving(results) as url:
        pages = {"runs": "", "run": f"run/{run}", "attempt": f"run/{run}/attempt/{attempt}"}
        if len(runs) >= 2:
            pages["compare"] = f"compare?a={runs[0]}&b={runs[1]}"
        for name, path in pages.items():
            screenshot(
                chromium,
                url + path,
                out / f"{name}.png",
                size="1400,2400" if name == "attempt" else "1400,1000",
            )
            print(out / f"{name}.png")


if __name__ == "__main__":
    main()

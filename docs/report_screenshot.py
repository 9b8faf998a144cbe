"""Regenerate docs/report-screenshot.png: the demo's gate and cmgi runs as `sercache report --html` shows them.

Runs the demo (synthetic corpus, tiny random models: about 35 s on 2 idle CPU cores) in a temporary folder,
writes the HTML report, renders its top in headless Chromium (tests/browser.py) and saves a 256-colour PNG.
Needs chromium, chromium-driver and selenium (``pip install -e '.[html]'``)::

    python docs/report_screenshot.py            # in a temporary folder
    python docs/report_screenshot.py /tmp/work  # in /tmp/work/sercache-demo, reused when run again
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from sercache.demo import run_demo  # noqa: E402
from sercache.runs.report import make_report  # noqa: E402
from tests.browser import ink_fraction, render  # noqa: E402

#: the capture ends below the first full-width figure (the first run's training curves): title, run facts,
#: tables, paired tests, UA per fold, paired differences, confusion matrices and curves
DOWN_TO = "figure.wide"


def main(workdir: str | None = None) -> None:
    out = REPO / "docs" / "report-screenshot.png"
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(workdir or tmp)  # relative paths in the page, as a user running `sercache demo` sees them
        run_demo("sercache-demo", progress=False, say=lambda message: None)  # as `sercache demo`: --jobs 2
        make_report(["sercache-demo/runs/gate", "sercache-demo/runs/cmgi"], html="report.html")
        shot = render(Path("report.html"), Path("shot.png"), down_to=DOWN_TO)
        if shot.errors or not all(i["complete"] and i["naturalWidth"] for i in shot.images):
            raise SystemExit(f"the page did not render cleanly: {shot.errors} {shot.images}")
        if ink_fraction(shot.screenshot) < 0.03:
            raise SystemExit("the screenshot is blank")
        with Image.open(shot.screenshot) as im:
            im.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(*sys.argv[1:2])

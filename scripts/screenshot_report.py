"""Render a study's report.html in headless Chromium and save a PNG screenshot (used for docs/).

    python scripts/screenshot_report.py RUN_DIR docs/report-screenshot.png [--height 2400]

Needs Debian's chromium (apt-get install chromium) and playwright (pip install playwright); no network.
"""

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--height", type=int, default=0, help="clip to this many pixels (0: the whole page)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((args.run_dir / "report.html").resolve().as_uri())
        clip = {"x": 0, "y": 0, "width": 1200, "height": args.height} if args.height else None
        page.screenshot(path=str(args.png), full_page=True, clip=clip)
        browser.close()
    if errors:
        raise SystemExit(f"console errors: {errors}")
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()

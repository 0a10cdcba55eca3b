"""Screenshot an HTML report in headless chromium (Debian's package, driven by playwright).

    python .ci/screenshot.py REPORT.html OUT.png [--height PIXELS]

Without ``--height`` the whole page is captured. Exits 1 if the page logged a console error or
asked for anything over the network, so a CI run notices a broken report as well as keeping its picture.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("XP_TEST_CHROMIUM", "/usr/bin/chromium")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=None, help="capture only the top PIXELS of the page")
    args = parser.parse_args()
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": args.height or 900}, device_scale_factor=1)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url))
            page.goto(args.report.resolve().as_uri())
            page.wait_for_load_state("load")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=args.height is None)
        finally:
            browser.close()
    for problem in problems:
        sys.stderr.write(f"screenshot: {problem}\n")
    sys.stdout.write(f"screenshot of {args.report} written to {args.out}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

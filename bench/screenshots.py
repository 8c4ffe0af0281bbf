"""Screenshots of the page for people, for README: desktop (1280x900) and phone (375x812).

Starts the Procfile's server on the shipped model, diagnoses two sample leaf photos and one field photo
(sample_images/field/, which the model cannot judge with confidence) in a headless system Chromium, and saves
docs/screenshot-desktop.png and docs/screenshot-phone.png.

    .venv/bin/pip install -r requirements-browser.txt   # and: apt-get install chromium
    .venv/bin/python -m bench.screenshots [--out docs] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tests.support import ROOT, SAMPLES, SHIPPED_MODEL, Server, model_env

PHOTOS = [SAMPLES / "tomato_late_blight.jpg", SAMPLES / "apple_rust.jpg", SAMPLES / "field" / "tomato_late_blight.jpg"]
PHONE_HEIGHT = 1700  # the form and the first answers; the whole phone page is a long scroll
SIZES = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    "phone": {"viewport": {"width": 375, "height": 812}, "is_mobile": True, "has_touch": True},
}


def shoot(url: str, chromium: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        for name, options in SIZES.items():
            context = browser.new_context(**options)
            page = context.new_page()
            page.goto(f"{url}/diagnose")
            page.set_input_files("#photos", PHOTOS)
            page.get_by_role("button", name="Diagnose").click()
            expect(page.get_by_role("status")).to_contain_text("checked", timeout=60_000)
            page.locator("#results details").first.evaluate("node => { node.open = true; }")
            path = out / f"screenshot-{name}.png"
            if name == "phone":  # a full-page capture would drop the touch emulation (and the camera button)
                page.set_viewport_size({"width": 375, "height": PHONE_HEIGHT})
            page.screenshot(path=str(path), full_page=name != "phone")
            saved.append(path)
            context.close()
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args(argv)
    if not args.chromium:
        print("no Chromium found: apt-get install chromium, or pass --chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    server = Server(model_env(SHIPPED_MODEL))
    try:
        server.wait_healthy(300)
        for path in shoot(server.url, args.chromium, args.out):
            print(path)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

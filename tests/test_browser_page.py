"""The live page in a real headless browser (Debian chromium driven by chromium-driver through selenium; no
browser download) while `instrument-ai run --source demo --http` plays the demo at real time: the family
text follows the daemon's changes through the demo's notes, the timeline canvas draws, and a screenshot is
saved as a test artifact ($INSTRUMENT_AI_ARTIFACTS, else the test's tmp_path); at the demo's end the page shows
"source ended" rather than reconnecting. The delay from each note's onset to the page showing its family is
printed (a figure, not an assertion)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import find_program
from livehelp import Daemon, shipped_version, wait_until

from instrument_ai.device.audio_io import demo_path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=412,915",  # a phone's viewport
)

CANVAS_PROBE = """
const c = document.getElementById('timeline'), ctx = c.getContext('2d');
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let painted = 0; const colours = new Set();
for (let i = 0; i < d.length; i += 4) {
  if (d[i + 3] > 0) { painted += 1; colours.add((d[i] >> 4) + ',' + (d[i + 1] >> 4) + ',' + (d[i + 2] >> 4)); }
}
return {painted: painted, total: d.length / 4, colours: colours.size};
"""


def _browser(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find_program("chromium") or "chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=find_program("chromedriver") or "chromedriver")
    return webdriver.Chrome(options=options, service=service)


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("INSTRUMENT_AI_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.needs_apt("chromium", "chromedriver")
def test_the_page_follows_the_demo_in_a_real_browser(tmp_path: Path) -> None:
    notes = json.loads(demo_path().with_suffix(".json").read_text())["notes"]
    browser = _browser(tmp_path)
    daemon = Daemon(["--source", "demo", "--json", "--every-hop", "--http", "127.0.0.1:0"])
    try:
        browser.get(daemon.url)
        wait_until(lambda: browser.execute_script("return window.__hops") > 0, 20, "the page to get hops")
        assert browser.find_element("id", "model").text == f"default v{shipped_version()}"
        daemon.wait_for(lambda: any(r.get("time", 0) >= 14.0 for r in daemon.hops()), 30, "14 s of the demo")
        wait_until(lambda: browser.find_element("id", "family").text.lower() not in ("", "…"), 5, "a family shown")
        canvas = browser.execute_script(CANVAS_PROBE)
        screenshot = _artifacts(tmp_path) / "live-page.png"
        assert browser.get_screenshot_as_file(str(screenshot))
        assert daemon.finish(timeout=60) == 0
        # the demo ended: the page says so instead of reconnecting forever (issue 21, defect 14)
        wait_until(lambda: browser.find_element("id", "conn").text == "source ended", 10, "'source ended'")
        assert browser.execute_script("return window.__ended.reason") == "end of source"
        shown: list[dict[str, Any]] = browser.execute_script("return window.__shown")
        origin = browser.execute_script("return window.__origin")
        top = browser.find_elements("css selector", "#top .row")
        level = browser.find_element("id", "level").text
    finally:
        daemon.stop()
        browser.quit()

    # the timeline drew: a good part of the canvas is painted, in several colours (families and silence)
    assert canvas["painted"] > 0.05 * canvas["total"] and canvas["colours"] >= 3, canvas
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(top) == 1 or len(top) == 3  # silence at the end: one empty row; else the top 3
    assert level.endswith("dB")
    # the page showed every change the daemon announced after it connected, in order
    changes = [(r["hop"], r["label"]) for r in daemon.hops() if r["type"] == "change"]
    first = shown[0]["hop"]
    assert [(s["hop"], s["label"]) for s in shown[1:]] == [c for c in changes if c[0] > first]
    families = {s["label"] for s in shown} - {"silence", "unknown", "other"}
    assert len(families) >= 5, families  # the text went through the demo's notes
    # delay from each note's onset (stream time -> wall clock) to the page showing the family the daemon named
    print(f"\nlive page screenshot: {screenshot}")
    for note in notes:
        first_named = next(
            (s for s in shown if note["onset"] < s["time"] <= note["offset"] + 0.5 and s["label"] == note["family"]),
            None,
        )
        if first_named is None:
            named = [s["label"] for s in shown if note["onset"] < s["time"] <= note["offset"]]
            print(f"note {note['family']:<9} onset {note['onset']:5.2f} s: not named (page showed {named})")
            continue
        delay = first_named["wall"] - (origin + note["onset"])
        transport = first_named["wall"] - first_named["sent"]
        print(
            f"note {note['family']:<9} onset {note['onset']:5.2f} s: shown {delay:.3f} s after the onset "
            f"(decided at stream {first_named['time']:.2f} s; daemon -> page {1000 * transport:.1f} ms)"
        )

"""Check the built book in a real headless Chromium, served from localhost.

For every page in the table of contents: it loads, its images load (natural width > 0) and have a descriptive alt
text, its captioned figures are numbered, its math is typeset by MathJax, its embedded widgets render, the console
shows no errors, no request leaves localhost, its text names no path of the machine that made it, it does not scroll
sideways on a 400 px phone nor on a 1,400 px screen, and its title is its own. On the landing page and the results
chapter, the at-a-glance table lies inside the first 1,400 x 900 screen. Exits 1 listing every failure.

    python scripts/check_book.py [--html _build/html] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]


def toc_pages(toc_file: Path) -> list[str]:
    """Every file of ``_toc.yml``, in order, as a path without suffix."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def browser(profile_dir: str) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1280,1600", f"--user-data-dir={profile_dir}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))


PAGE_STATE = r"""
const imgs = Array.from(document.images);
return {
  title: document.title,
  ready: document.readyState,
  images: imgs.length,
  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
  math: document.querySelectorAll('.math, span.math, div.math').length,
  typeset: document.querySelectorAll('mjx-container').length,
  widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
  widgets: document.querySelectorAll('.jupyter-widgets, .widget-inline-hbox, .widget-box').length,
  undescribed: imgs.filter(i => {
    const alt = (i.getAttribute('alt') || '').trim(), src = i.getAttribute('src') || '';
    return !alt || src.endsWith(alt) || /\.(png|svg|jpe?g|gif)$/i.test(alt);
  }).map(i => i.getAttribute('src')),
  unnumbered: Array.from(document.querySelectorAll('figcaption')).filter(c => c.querySelector('.caption-text')
    && !c.querySelector('.caption-number')).map(c => c.innerText.trim().slice(0, 60)),
  paths: Array.from(new Set((document.body.innerText.match(/(?:\/(?:home|work|tmp|root|Users|mnt|scratch)\/[\w.\/-]+)/g) || []))),
};
"""

OVERFLOW = "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"

GLANCE = """
const box = Array.from(document.querySelectorAll('.admonition')).find(a => /at a glance/i.test(a.querySelector('.admonition-title')?.innerText || ''));
if (!box) return null;
window.scrollTo(0, 0);
const table = box.querySelector('table') || box;
return table.getBoundingClientRect().bottom + window.scrollY;
"""

FIRST_SCREEN = ("book/intro", "book/executed/summary")
"""The pages whose at-a-glance table must lie in the first screen."""


VIEWS = """
const out = [];
for (const view of document.querySelectorAll(".msflow-view")) {
  const menu = view.querySelector("select"), range = view.querySelector("input[type=range]");
  const img = view.querySelector("img"), cap = view.querySelector("figcaption");
  const seen = new Set([img.src + cap.textContent]);
  for (const m of [...menu.options].map(o => o.value)) {
    for (let i = 0; i <= Number(range.max); i++) {
      menu.value = m; menu.dispatchEvent(new Event("change"));
      range.value = String(i); range.dispatchEvent(new Event("input"));
      seen.add(img.src + cap.textContent);
    }
  }
  const frames = menu.options.length * (Number(range.max) + 1);
  out.push([view.id, frames, seen.size, img.alt.length]);
}
return out;
"""
"""Moves every kernel-free view of a page (``msflow_study.views``) through each choice and step; for each view returns
its id, its number of frames, how many distinct frames were shown and the length of the last alt text."""


def view_problems(driver) -> list[str]:
    """The kernel-free views that do not answer their menu and slider with a frame of their own for each position."""
    problems = []
    for vid, frames, shown, alt in driver.execute_script(VIEWS):
        if shown < frames:
            problems.append(f"view {vid} showed {shown} distinct frames for its {frames} positions")
        if alt < 30:
            problems.append(f"view {vid} left an image without a descriptive alt text")
    return problems


def layout_problems(driver, page: str) -> list[str]:
    """Sideways scrolling at 400 and 1,400 px, and, on the pages of :data:`FIRST_SCREEN`, where the at-a-glance table
    ends at 1,400 x 900."""
    problems = []
    for width in (400, 1400):
        driver.set_window_size(width, 900)
        time.sleep(0.2)
        extra = driver.execute_script(OVERFLOW)
        if extra > 1:
            problems.append(f"scrolls sideways by {extra} px at {width} px wide")
    if page in FIRST_SCREEN:
        bottom = driver.execute_script(GLANCE)
        if bottom is None:
            problems.append("has no at-a-glance box")
        elif bottom > 900:
            problems.append(f"its at-a-glance table ends {bottom:.0f} px down, below the first 900 px screen")
    driver.set_window_size(1280, 1600)
    return problems


def check_page(driver, url: str, base: str, shot: Path | None) -> tuple[dict, list[str]]:
    driver.get(url)
    state: dict = {}
    for _ in range(60):  # wait for MathJax and the widget manager (up to ~15 s)
        state = driver.execute_script(PAGE_STATE)
        if state["ready"] == "complete" and (not state["math"] or state["typeset"]) and (not state["widget_views"] or state["widgets"]):
            break
        time.sleep(0.25)
    problems = []
    if state["ready"] != "complete":
        problems.append("did not finish loading")
    if "404" in state["title"] or not state["title"]:
        problems.append(f"bad title {state['title']!r}")
    problems += [f"image not loaded: {src}" for src in state["broken"]]
    problems += [f"image without a descriptive alt text: {src}" for src in state["undescribed"]]
    problems += [f"machine path in the text: {path}" for path in state["paths"]]
    problems += [f"figure without a number: {caption!r}" for caption in state["unnumbered"]]
    if state["math"] and not state["typeset"]:
        problems.append(f"{state['math']} math elements but nothing typeset by MathJax")
    if state["widget_views"] and not state["widgets"]:
        problems.append(f"{state['widget_views']} embedded widgets but none rendered")
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message'][:200]}")
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            req = msg["params"]["request"]["url"]
            # chrome:// and the like are the browser's own pages; every network scheme must stay on localhost
            if req.startswith(("http:", "https:", "ws:", "wss:", "ftp:")) and not req.startswith(base):
                problems.append(f"request left localhost: {req[:200]}")
    if shot is not None:
        driver.save_screenshot(str(shot))
    return state, problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--html", default=str(ROOT / "_build" / "html"))
    p.add_argument("--toc", default=str(ROOT / "_toc.yml"))
    p.add_argument("--screenshots", default=None, help="save a PNG of each page here")
    args = p.parse_args()
    html = Path(args.html)
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    server, base = serve(html)
    failures, titles = 0, {}
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        driver.get("about:blank")
        driver.get_log("browser"), driver.get_log("performance")  # drain what the browser did at start-up
        try:
            listed = toc_pages(Path(args.toc))
            orphans = sorted(str(f.relative_to(html).with_suffix("")) for f in html.glob("book/**/*.html"))
            for page in listed + [o for o in orphans if o not in listed]:  # the run pages are linked, not listed
                rel = f"{page}.html"
                if not (html / rel).exists():
                    print(f"FAIL {rel}: not built")
                    failures += 1
                    continue
                shot = shots / (rel.replace("/", "__") + ".png") if shots else None
                state, problems = check_page(driver, f"{base}/{rel}", base, shot)
                problems += layout_problems(driver, page) + view_problems(driver)
                titles.setdefault(state["title"], []).append(rel)
                summary = f"{state['images']} images, {state['typeset']} math, {state['widgets']} widget parts"
                print(("FAIL" if problems else "ok  ") + f" {rel}: {summary}")
                for prob in problems:
                    print(f"     - {prob}")
                failures += bool(problems)
        finally:
            driver.quit()
            server.shutdown()
    for title, rels in titles.items():
        if len(rels) > 1:
            print(f"FAIL {', '.join(rels)}: share the title {title!r}")
            failures += len(rels)
    print(f"check_book: {failures} page(s) with problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

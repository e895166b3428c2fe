"""Check the pack's frontend in a real headless Chromium against a running ComfyUI.

    python scripts/browser_check.py --server http://127.0.0.1:8188 --screenshot docs/vera_layer_viewer.png

Needs `pip install playwright` (the Python package only: it drives the system's Chromium, no browser
download) and Chromium (Debian: apt install chromium). It opens the ComfyUI page, checks that the layer
viewer extension registered, loads every UI workflow from workflows/ and checks that none has a missing
node type, runs the vera-tiny object-addition workflow from the page (its input video must already be in
ComfyUI's input folder), shows the result in the viewer and saves a screenshot. It reports console errors,
page errors and any request to a host other than the server; the exit code is 1 if any came from this
pack, 0 otherwise (a request the page itself aborted, e.g. a video preview dropped when the next
workflow is loaded, is reported but not counted). Prints a JSON report.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def upload_inputs(server: str) -> list[str]:
    """Put the files the workflows name into ComfyUI's input folder (a real clip, and a mask for the
    background-change workflow), so loader previews do not 404."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    import torch

    from vera.client import ComfyClient
    from vera.data.clips import bundled_clip
    from vera.media.video import write_png

    client, names = ComfyClient(server), []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vera_example.mp4", "vera_source_832x480.mp4"):
            copy = Path(tmp) / name
            copy.write_bytes(bundled_clip().read_bytes())
            names.append(client.upload(copy, subfolder=""))
        mask = torch.full((480, 832, 1), 255, dtype=torch.uint8)
        mask[120:480, 280:560] = 0  # white = background that may change
        names.append(client.upload(write_png(mask, Path(tmp) / "vera_background_mask.png"), subfolder=""))
    return names


def check(server: str, screenshot: Path | None, chromium: str, run_workflow: str, timeout: float) -> dict:
    from playwright.sync_api import sync_playwright

    host = urlparse(server).netloc
    report = dict(console_errors=[], page_errors=[], failed_requests=[], external_requests=[], workflows={},
                  extension_registered=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.on("console", lambda m: m.type == "error" and report["console_errors"].append(m.text))
        page.on("pageerror", lambda e: report["page_errors"].append(str(e)))
        page.on("response", lambda r: r.status >= 400 and report["failed_requests"].append(f"{r.status} {r.url}"))
        page.on("requestfailed", lambda r: report["failed_requests"].append(f"{r.failure} {r.url}"))
        page.on("request", lambda r: urlparse(r.url).netloc not in (host, "") and not r.url.startswith("data:")
                and report["external_requests"].append(r.url))
        page.goto(server, wait_until="domcontentloaded")
        page.wait_for_function("window.app && window.app.graph && window.app.extensions?.length > 0",
                               timeout=timeout * 1000)
        page.wait_for_timeout(1500)
        report["extension_registered"] = page.evaluate(
            "window.app.extensions.some(e => e.name === 'vera.LayerViewer')")
        for path in sorted((ROOT / "workflows").glob("*.json")):
            graph = json.loads(path.read_text())
            missing = page.evaluate("""async (graph) => {
                await window.app.loadGraphData(graph);
                const known = new Set(Object.keys(window.LiteGraph.registered_node_types));
                return window.app.graph._nodes.filter(n => !known.has(n.type)).map(n => n.type);
            }""", graph)
            report["workflows"][path.name] = dict(nodes=len(graph["nodes"]), missing=missing)
        if run_workflow:
            graph = json.loads((ROOT / "workflows" / run_workflow).read_text())
            for node in graph["nodes"]:  # a new seed, so the run is not answered from ComfyUI's cache
                if node["type"] == "VeraSampler":
                    node["widgets_values"][0] = int(time.time()) % 100000
            page.evaluate("async (graph) => { await window.app.loadGraphData(graph); }", graph)
            page.evaluate("window.__veraDone = false; window.app.api.addEventListener('execution_success', "
                          "() => { window.__veraDone = true; })")
            started = time.time()
            page.evaluate("window.app.queuePrompt(0, 1)")
            page.wait_for_function("window.__veraDone === true", timeout=timeout * 1000)
            report["run_seconds"] = round(time.time() - started, 1)
            page.wait_for_function("window.app.graph._nodes.find(n => n.type === 'VeraDecodeLayers')?.veraViewer?.entry",
                                   timeout=30000)
            page.wait_for_timeout(1500)
            report["viewers"] = page.evaluate("document.querySelectorAll('.vera-layer-viewer').length")
            report["viewer_frames"] = page.evaluate("""() => {
                const node = window.app.graph._nodes.find(n => n.type === 'VeraDecodeLayers');
                return node?.veraViewer?.entry?.frames?.length ?? 0;
            }""")
            if screenshot:
                report["screenshot"] = str(shoot(page, screenshot))
        browser.close()
    ours = lambda text: "vera" in text.lower()
    report["pack_problems"] = ([e for e in report["console_errors"] + report["page_errors"] if ours(e)]
                               + [u for u in report["external_requests"] + report["failed_requests"]
                                  if ("/extensions/" in u or "vera" in u.lower()) and "ERR_ABORTED" not in u]
                               + [f"{n}: missing {w['missing']}" for n, w in report["workflows"].items() if w["missing"]]
                               + ([] if report["extension_registered"] else ["layer viewer extension not registered"]))
    return report


def shoot(page, path: Path) -> Path:
    """The three viewers side by side, other nodes moved out of view: Decode on the edit layer over a
    checkerboard, Composite in compare mode (cursor at 40%), Save on the difference heatmap; frame 9."""
    page.evaluate("""() => {
        const app = window.app, ds = app.canvas.ds;
        const shown = [['VeraDecodeLayers', 'edit'], ['VeraComposite', 'compare'], ['VeraSaveLayers', 'difference']];
        for (const node of app.graph._nodes) node.pos = [5000, 5000];
        shown.forEach(([type, mode], i) => {
            const node = app.graph._nodes.find(n => n.type === type);
            node.pos = [20 + i * 400, 40]; node.size = [380, 520];
            const viewer = node.veraViewer;
            viewer.hoverX = 0.4; viewer.frame = 8; viewer.slider.value = '8'; viewer.setMode(mode);
        });
        ds.scale = 1.0; ds.offset = [0, 0];
        app.graph.setDirtyCanvas(true, true);
    }""")
    page.wait_for_timeout(2000)
    box = page.evaluate("""() => {
        const r = window.app.canvas.canvas.getBoundingClientRect();
        return {x: r.left, y: r.top};
    }""")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip=dict(x=box["x"], y=box["y"], width=1220, height=580))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--run", default="vera_tiny_object_addition.json",
                        help="UI workflow to queue from the page ('' to skip)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-upload", action="store_true", help="do not upload the workflows' input files first")
    args = parser.parse_args()
    if not args.no_upload:
        upload_inputs(args.server)
    report = check(args.server, args.screenshot, args.chromium, args.run, args.timeout)
    print(json.dumps(report, indent=1))
    return 1 if report["pack_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

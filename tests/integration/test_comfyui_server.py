"""Integration with a real ComfyUI (skipped unless one is given).

    VERA_COMFYUI_URL=http://127.0.0.1:8188   a running ComfyUI with this pack in custom_nodes, or
    COMFYUI_DIR=/path/to/ComfyUI             a checkout: the pack is linked into custom_nodes and a server is
                                             started (COMFYUI_PYTHON: its Python, default this one).
COMFYUI_DIR (with COMFYUI_PYTHON) also enables the check of ComfyUI's own Wan VAE behind our bridge.
`bash scripts/integration.sh` sets all of this up on a CPU machine with ../shared/tools/comfyui-host.
"""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from vera import client
from vera.data.clips import bundled_clip
from vera.media import video

ROOT = Path(__file__).resolve().parents[2]
URL, COMFYUI_DIR = os.environ.get("VERA_COMFYUI_URL"), os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
pytestmark = pytest.mark.skipif(not (URL or COMFYUI_DIR), reason="set VERA_COMFYUI_URL or COMFYUI_DIR to run")


def _get(server, path):
    with urllib.request.urlopen(server + path, timeout=30) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def comfyui_server(*flags: str):
    """A ComfyUI from COMFYUI_DIR on a free port with this pack linked in -> its URL; stopped on
    exit."""
    link = Path(COMFYUI_DIR) / "custom_nodes" / ROOT.name
    if not link.exists():
        link.symlink_to(ROOT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1",
                                "--port", str(port), *flags],
                               cwd=COMFYUI_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                _get(url, "/system_stats")
                break
            except OSError:
                assert process.poll() is None, "ComfyUI exited during start"
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def server():
    if URL:
        yield URL.rstrip("/")
        return
    with comfyui_server() as url:
        yield url


@pytest.mark.skipif(not os.environ.get("COMFYUI_LOG"), reason="needs COMFYUI_LOG (server log)")
def test_the_pack_imported_without_errors_under_comfyuis_loader(server):
    from helpers import names_the_pack

    log = Path(os.environ["COMFYUI_LOG"]).read_text(errors="replace")
    failed = [line for line in log.splitlines()
              if ("IMPORT FAILED" in line or "Cannot import" in line)
              and names_the_pack(line, ROOT.name)]
    assert not failed, "ComfyUI could not import the pack:\n" + log[-4000:]


def test_object_info_lists_every_vera_node_and_the_core_nodes_our_workflows_use(server, pack):
    from helpers import workflow_script

    workflows, ours = workflow_script(), pack
    info = _get(server, "/object_info")
    for node_id, cls in ours.NODE_CLASS_MAPPINGS.items():
        assert node_id in info, f"{node_id} missing from /object_info (did the pack import?)"
        assert info[node_id]["category"] == cls.CATEGORY
        spec = cls.INPUT_TYPES()
        assert set(info[node_id]["input"]["required"]) == set(spec["required"])
        assert set(info[node_id]["input"].get("optional", {})) == set(spec.get("optional", {}))
    for name, (links, widgets, outputs, _) in workflows.CORE_NODES.items():
        assert name in info, f"core node {name} is not in this ComfyUI"
        declared = info[name]["input_order"]
        assert [n for n in declared["required"] + declared.get("optional", []) if n not in dict(links)] == widgets, name
        assert [t for t in info[name]["output"]] == [t for _, t in outputs], name


def test_workflows_are_listed_as_the_packs_templates(server):
    templates = _get(server, "/workflow_templates")
    listed = next((names for names in templates.values() if "vera_tiny_object_addition" in names), None)
    assert listed is not None and set(listed) == {p.stem for p in (ROOT / "workflows").glob("*.json")}


@pytest.mark.parametrize("name", ["vera_tiny_object_addition", "vera_tiny_background_change"])
def test_vera_tiny_api_workflow_runs_and_keeps_untouched_pixels(server, name, tmp_path):
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    out = tmp_path / "out"
    args = client.build_parser().parse_args(["--server", server, "--workflow", str(ROOT / "workflows" / "api" /
                                             f"{name}_api.json"), "--input", str(clip), "--seed", "5",
                                             "--out", str(out), "--timeout", "600"])
    lines = []
    paths = client.run(args, log=lines.append)
    print("\n".join(lines[-4:]))
    finals = sorted(p for p in paths if p.parent.name.endswith("final_composite") and p.suffix == ".png")
    alphas = sorted(p for p in paths if p.parent.name.endswith("_alpha") and p.suffix == ".png")
    movs = [p for p in paths if p.suffix == ".mov"]
    assert len(finals) == len(alphas) == 17 and len(movs) == 1
    source, _ = video.read_frames(bundled_clip(), 17)
    final = torch.stack([video.read_png(p) for p in finals])
    alpha = torch.stack([video.read_png(p) for p in alphas])[..., 0]
    untouched = alpha == 0
    assert untouched.any() and (~untouched).any()
    assert torch.equal(final[untouched], source[untouched]), "pixels outside the matte changed"
    rgba = video.read_rgba_video(movs[0])
    assert (rgba[..., 3].int() - alpha.int()).abs().max() <= 1
    print(f"{name}: {len(paths)} files, {float((~untouched).float().mean()):.1%} of pixels edited, "
          "untouched pixels bit-identical to the source")


def test_a_two_edit_layer_stack_in_a_real_comfyui_renders_from_its_folder(server, tmp_path):
    """The layer-stack workflow: two edits, the second on the first's final; the saved folder
    (downloaded as the client lays it out) re-renders to its final bit for bit, and Blender's
    compositor reproduces it from the generated script where Blender is installed."""
    from helpers import blender_comp

    from vera.__main__ import main

    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    out = tmp_path / "out"
    workflow = ROOT / "workflows" / "api" / "vera_tiny_layer_stack_api.json"
    args = client.build_parser().parse_args(["--server", server, "--workflow", str(workflow),
                                             "--input", str(clip), "--out", str(out),
                                             "--timeout", "900"])
    paths = client.run(args, log=lambda line: None)
    folder = next(p for p in paths if p.name == "stack.json").parent
    stack = json.loads((folder / "stack.json").read_text())
    assert len(stack["layers"]) == 2 and stack["source"]["count"] == 17
    assert main(["stack", "render", str(folder), "--out", str(tmp_path / "render")]) == 0
    final_folder = folder / stack["final"]
    saved = sorted(final_folder.glob("*.png"))
    rendered = sorted((tmp_path / "render" / "final_composite").glob("*.png"))
    assert len(saved) == len(rendered) == 17
    assert all(torch.equal(video.read_png(a), video.read_png(b)) for a, b in zip(saved, rendered))
    blender = blender_comp(folder, tmp_path / "blender")
    if blender is not None:
        finals = torch.stack([video.read_png(p) for p in saved])
        worst = int((blender.int() - finals.int()).abs().max())
        assert blender.shape == finals.shape and worst <= 2, worst
        print(f"layer stack from ComfyUI: blender comp within {worst} level(s) of the final")


def test_vera_tiny_long_shot_runs_in_context_windows_and_keeps_untouched_pixels(server, tmp_path):
    """The long-shot workflow: 65 frames, five of vera-tiny's 17-frame windows fused every step;
    every file has all 65 frames, untouched pixels are the source's, settings.json has the
    windows."""
    from vera.sampling.settings import SamplingSettings
    from vera.sampling.windows import latent_frames, source_spans, windows_for

    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    out = tmp_path / "out"
    workflow = ROOT / "workflows" / "api" / "vera_tiny_long_shot_api.json"
    args = client.build_parser().parse_args(["--server", server, "--workflow", str(workflow),
                                             "--input", str(clip), "--seed", "5",
                                             "--out", str(out), "--timeout", "900"])
    lines = []
    paths = client.run(args, log=lines.append)
    print("\n".join(lines[-4:]))
    frames = 65
    pngs = {kind: sorted(p for p in paths if p.parent.name.endswith(kind) and p.suffix == ".png")
            for kind in ("final_composite", "_alpha", "edit_layer_rgba")}
    assert {kind: len(found) for kind, found in pngs.items()} == dict.fromkeys(pngs, frames)
    for suffix in ("final_composite.mp4", "alpha.mp4"):
        decoded, _ = video.read_video(next(p for p in paths if p.name.endswith(suffix)))
        assert decoded.shape[0] == frames, suffix
    rgba = video.read_rgba_video(next(p for p in paths if p.suffix == ".mov"))
    assert rgba.shape[0] == frames
    source, _ = video.read_frames(bundled_clip(), frames)
    final = torch.stack([video.read_png(p) for p in pngs["final_composite"]])
    alpha = torch.stack([video.read_png(p) for p in pngs["_alpha"]])[..., 0]
    untouched = alpha == 0
    assert untouched.any() and (~untouched).any()
    assert torch.equal(final[untouched], source[untouched]), "pixels outside the matte changed"
    assert (rgba[..., 3].int() - alpha.int()).abs().max() <= 1
    saved = json.loads(next(p for p in paths if p.name.endswith("settings.json")).read_text())
    settings = SamplingSettings(window=saved["window"], window_overlap=saved["window_overlap"])
    expected = source_spans(windows_for(settings, latent_frames(frames)), frames)
    assert saved["windows"] == expected == [[0, 16], [9, 28], [21, 40], [33, 52], [45, 64]]
    assert saved["frames"] == frames
    print(f"long shot: {frames} frames in {len(expected)} windows, "
          f"{float((~untouched).float().mean()):.1%} of pixels edited, untouched pixels "
          "bit-identical to the source")


def test_cancel_stops_the_sampler_within_a_step(server, tmp_path):
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(workflow, "Vera Sampler", "steps", 200)
    client.set_input(workflow, "Vera Sampler", "seed", int(time.time()))
    comfy = client.ComfyClient(server)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    # a fresh host has no inputs
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    ws = comfy.open_websocket()
    prompt_id = comfy.submit(workflow)
    steps_seen, interrupted_at, end = 0, None, None
    deadline = time.time() + 300
    while time.time() < deadline and end is None:
        raw = ws.recv()
        if isinstance(raw, bytes):
            continue
        message = json.loads(raw)
        data = message.get("data", {})
        if message["type"] == "progress" and data.get("prompt_id") == prompt_id:
            steps_seen = data["value"]
            if steps_seen == 3 and interrupted_at is None:
                interrupted_at = steps_seen
                urllib.request.urlopen(urllib.request.Request(f"{server}/interrupt", data=b"{}", method="POST"))
        if message["type"] in ("execution_interrupted", "execution_success", "execution_error") and \
                data.get("prompt_id") == prompt_id:
            end = message["type"]
    ws.close()
    print(f"cancel: requested after step {interrupted_at}, last step reported {steps_seen} of 200, ended by {end}")
    assert end == "execution_interrupted" and steps_seen <= interrupted_at + 1


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs COMFYUI_DIR (ComfyUI's own modules)")
def test_comfyui_wan_vae_behind_our_bridge_matches_diffusers(random_wan21_vae_file):
    result = subprocess.run([COMFYUI_PYTHON, str(Path(__file__).with_name("comfy_vae_check.py")), str(ROOT),
                             str(random_wan21_vae_file)], cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("ComfyUI Wan VAE vs diffusers:", report)
    assert report["stats_match_comfy_wan21"] and report["bridge_uses_comfy_wan21"]
    assert report["encode_max_abs"] < 1e-3 * max(1.0, report["latent_abs_mean"]) and report["decode_max_abs"] < 1e-3


@pytest.fixture(scope="module")
def random_wan21_vae_file(tmp_path_factory):
    """A Wan2.1 VAE with the real shapes and random weights (ComfyUI layout), as users' wan_2.1_vae.safetensors."""
    from diffusers import AutoencoderKLWan

    from vera.encoders.vae import save_vae_original

    torch.manual_seed(0)
    return save_vae_original(AutoencoderKLWan().eval(), tmp_path_factory.mktemp("vae") / "wan21_vae_random.safetensors")


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs COMFYUI_DIR (to put a VAE file into its models/vae)")
def test_comfyui_vae_loader_plugs_into_our_nodes_on_the_server(server, random_wan21_vae_file, tmp_path):
    name = "vera_test_wan21_vae_random.safetensors"
    target = Path(COMFYUI_DIR) / "models" / "vae" / name
    if target.is_symlink():  # ours, from an earlier run (its target may be gone)
        target.unlink()
    target.symlink_to(random_wan21_vae_file)
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    workflow["5"] = {"class_type": "VAELoader", "inputs": {"vae_name": name}, "_meta": {"title": "Wan2.1 VAE"}}
    client.set_input(workflow, "Vera Encode", "frame_count", 5)
    client.set_input(workflow, "Vera Sampler", "steps", 2)
    client.set_input(workflow, "Vera Sampler", "seed", int(time.time()))
    # vera-tiny was not trained on this (random) VAE's latents, so its matte is noise; at cutoff 0.5 both
    # zero and non-zero alpha occur (85% / 15% when written), so the bit-exactness check below means something
    client.set_input(workflow, "Vera Decode Layers", "alpha_cutoff", 0.5)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    comfy = client.ComfyClient(server)
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    entry = comfy.wait(comfy.submit(workflow), {}, time.time() + 900, log=lambda *_: None)
    items = client.output_files(entry)
    paths = [comfy.download(item, tmp_path / "out")[0] for item in items]
    finals = sorted(p for p in paths if p.parent.name.endswith("final_composite") and p.suffix == ".png")
    alphas = sorted(p for p in paths if p.parent.name.endswith("_alpha") and p.suffix == ".png")
    source, _ = video.read_frames(bundled_clip(), 5)
    final = torch.stack([video.read_png(p) for p in finals])
    alpha = torch.stack([video.read_png(p) for p in alphas])[..., 0]
    untouched = alpha == 0
    assert len(finals) == 5 and 0.05 < untouched.float().mean() < 0.995
    assert torch.equal(final[untouched], source[untouched])
    print(f"VAELoader -> Vera nodes on the server: {len(paths)} files, {float(untouched.float().mean()):.1%} of pixels "
          "outside the matte, all bit-identical to the source")


def test_bundled_vae_works_with_comfyuis_own_vae_encode_and_decode(server, tmp_path):
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    comfy = client.ComfyClient(server)
    workflow = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": comfy.upload(clip)}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0,
                                                          "length": 5}},
        "4": {"class_type": "VeraLoadModel", "inputs": {"model_name": "vera-tiny", "weight_dtype": "auto",
                                                         "attention": "auto"}},
        "5": {"class_type": "VeraBundledVAE", "inputs": {"vera_model": ["4", 0]}},
        "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["5", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["5", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"vera_vae_rt_{time.time_ns()}"}},
    }
    entry = comfy.wait(comfy.submit(workflow), {}, time.time() + 300, log=lambda *_: None)
    images = [comfy.download(item, tmp_path / "out")[0] for item in client.output_files(entry)]
    decoded = torch.stack([video.read_png(p) for p in sorted(images)])
    source, _ = video.read_frames(bundled_clip(), 5)
    psnr = 10 * torch.log10(1 / ((decoded.float() - source.float()) / 255).pow(2).mean())
    print(f"Vera Bundled VAE through VAEEncode -> VAEDecode: {len(images)} frames, {float(psnr):.1f} dB vs the source")
    assert decoded.shape == source.shape and psnr > 15


def test_headless_client_command_runs_a_workflow_end_to_end(server, tmp_path):
    """`python -m vera.client` as a user runs it: upload, override by node title, submit, follow the
    websocket, download; then what it downloaded is checked against the source."""
    clip = tmp_path / "my clip.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    out = tmp_path / "downloads"
    command = [sys.executable, "-m", "vera.client", "--server", server,
               "--workflow", str(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json"),
               "--input", str(clip),
               "--prompt", "add a small green triangle moving from right to left",
               "--seed", "2024", "--steps", "5",  # a seed whose edit leaves pixels untouched
               "--set", "Vera Encode.frame_count=9", "--set", "Vera Save Layers.rgba_format=both",
               "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("queued prompt") for line in lines)
    # followed over the websocket
    assert any("Vera Sampler: step 5/5" in line for line in lines), lines
    assert lines[-1].startswith("downloaded") and str(out) in lines[-1]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    finals = [p for p in files if p.parent.name.endswith("final_composite") and p.suffix == ".png"]
    alphas = [p for p in files if p.parent.name.endswith("_alpha") and p.suffix == ".png"]
    assert len(finals) == len(alphas) == 9
    assert {p.suffix for p in files} >= {".png", ".mov", ".webm", ".mp4"}
    source, _ = video.read_frames(bundled_clip(), 9)
    final = torch.stack([video.read_png(p) for p in finals])
    alpha = torch.stack([video.read_png(p) for p in alphas])[..., 0]
    untouched = alpha == 0
    assert untouched.any() and (~untouched).any()
    assert torch.equal(final[untouched], source[untouched])
    webm = next(p for p in files if p.suffix == ".webm")
    assert (video.read_rgba_video(webm)[..., 3].int() - alpha.int()).abs().max() <= 1
    share = float(untouched.float().mean())
    print(f"python -m vera.client: {len(files)} files downloaded, {share:.1%} of pixels untouched "
          "and bit-identical to the source")


def test_a_failed_queue_item_names_the_value_and_the_server_keeps_serving(server, tmp_path):
    """NaN passes ComfyUI's own min/max checks; our node refuses it by name, and the next prompt
    runs."""
    comfy = client.ComfyClient(server)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    name = comfy.upload(clip)
    bad = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(bad, "Source video", "file", name)
    # as a raw API user could send it
    bad[client.find_node(bad, "Vera Sampler")]["inputs"]["cfg"] = float("nan")
    # the type as ComfyUI shows it: our path inside vera, not the pack's folder path
    readable = r"VeraSampler\): vera\.sampling\.settings\.SettingsError: .*cfg = nan"
    with pytest.raises(client.ClientError, match=readable):
        comfy.wait(comfy.submit(bad), {}, time.time() + 300, log=lambda *_: None)
    good = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(good, "Source video", "file", name)
    client.set_input(good, "Vera Encode", "frame_count", 5)
    client.set_input(good, "Vera Sampler", "steps", 2)
    client.set_input(good, "Vera Sampler", "seed", time.time_ns() % 100000)
    entry = comfy.wait(comfy.submit(good), {}, time.time() + 300, log=lambda *_: None)
    assert client.output_files(entry)


def _run_tiny(comfy, name: str, steps: int = 2, frames: int = 5) -> dict:
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(workflow, "Source video", "file", name)
    client.set_input(workflow, "Vera Encode", "frame_count", frames)
    client.set_input(workflow, "Vera Sampler", "steps", steps)
    client.set_input(workflow, "Vera Sampler", "seed", time.time_ns() % 100000)
    return comfy.wait(comfy.submit(workflow), {}, time.time() + 300, log=lambda *_: None)


def test_comfyuis_model_manager_holds_vera_and_frees_it_on_request(server, tmp_path):
    comfy = client.ComfyClient(server)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    name = comfy.upload(clip)
    assert client.output_files(_run_tiny(comfy, name))
    loaded = _get(server, "/vera/status")["loaded"]
    assert [m["name"] for m in loaded] == ["vera-tiny"] and loaded[0]["total_bytes"] > 0
    free = urllib.request.Request(f"{server}/free", data=json.dumps({"unload_models": True}).encode(),
                                  method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(free, timeout=30).read()
    deadline = time.time() + 60  # the server frees between prompts
    while _get(server, "/vera/status")["loaded"] and time.time() < deadline:
        time.sleep(0.5)
    assert _get(server, "/vera/status")["loaded"] == []
    assert client.output_files(_run_tiny(comfy, name))  # loads again and runs
    assert [m["name"] for m in _get(server, "/vera/status")["loaded"]] == ["vera-tiny"]


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs COMFYUI_DIR (starts a server with previews on)")
def test_previews_arrive_on_the_websocket_while_the_sampler_runs(tmp_path):
    """A second server started with --preview-method auto (ComfyUI's default is none)."""
    import websocket

    with comfyui_server("--preview-method", "auto") as url:
        comfy = client.ComfyClient(url)
        clip = tmp_path / "vera_example.mp4"
        clip.write_bytes(bundled_clip().read_bytes())
        workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
        client.set_input(workflow, "Source video", "file", comfy.upload(clip))
        client.set_input(workflow, "Vera Sampler", "steps", 4)
        ws = websocket.create_connection(f"{url.replace('http', 'ws', 1)}/ws?clientId="
                                         f"{comfy.client_id}", timeout=300)
        prompt_id = comfy.submit(workflow)
        running, previews, steps = None, 0, 0
        while True:
            raw = ws.recv()
            if isinstance(raw, bytes):
                previews += running == "12"  # node 12 is the Vera Sampler
                continue
            message = json.loads(raw)
            data = message.get("data", {})
            if message["type"] == "executing" and data.get("prompt_id") == prompt_id:
                running = data.get("node")
            if message["type"] == "progress" and running == "12":
                steps += 1
            if message["type"] in ("execution_success", "execution_error") and \
                    data.get("prompt_id") == prompt_id:
                break
        ws.close()
        assert message["type"] == "execution_success"
        print(f"previews: {previews} images during {steps} sampler steps")
        assert previews >= steps == 4


def _clip_at(tmp_path, rate) -> tuple[Path, torch.Tensor]:
    """The bundled clip re-encoded at `rate` with a tone as its sound -> (file, its frames as
    ComfyUI will decode them)."""
    import math

    frames, _ = video.read_frames(bundled_clip(), 17)
    seconds = 17 / float(rate)
    t = torch.arange(int(seconds * 48000)) / 48000
    tone = {"waveform": (0.2 * torch.sin(2 * math.pi * 330 * t)).view(1, 1, -1),
            "sample_rate": 48000}
    path = tmp_path / f"source_{float(rate):.3f}.mp4"
    video.write_mp4(frames, path, rate, audio=tone)
    return path, video.read_frames(path, 17)[0]


def _tags(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        return (Fraction(stream.average_rate), (cc.color_primaries, cc.color_trc, cc.colorspace),
                len(container.streams.audio), dict(container.metadata))


@pytest.mark.parametrize("rate", [Fraction(25), Fraction(24000, 1001)], ids=["25", "23.976"])
def test_shipped_workflow_keeps_the_source_rate_colour_tags_and_workflow(server, tmp_path, rate):
    """The shipped vera-tiny workflow on a 25 and a 23.976 fps clip: the .mov and the VIDEO output
    at the exact rate, BT.709-tagged, with sound on the composite; alpha within a level; PNGs with
    the workflow; settings.json; untouched pixels bit-exact."""
    from PIL import Image

    clip, source = _clip_at(tmp_path, rate)
    comfy = client.ComfyClient(server)
    ui = json.loads((ROOT / "workflows" / "vera_tiny_object_addition.json").read_text())
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    client.set_input(workflow, "Vera Sampler", "steps", 4)
    client.set_input(workflow, "Vera Sampler", "seed", time.time_ns() % 100000)
    entry = comfy.wait(comfy.submit(workflow, ui), {}, time.time() + 600, log=lambda *_: None)
    paths = [comfy.download(item, tmp_path / "out")[0] for item in client.output_files(entry)]
    mov = next(p for p in paths if p.suffix == ".mov")
    composite_mp4 = next(p for p in paths if p.name.endswith("final_composite.mp4"))
    saved_video = next(p for p in paths if p.suffix == ".mp4" and "_final_0" in p.name)  # SaveVideo
    for path, sound in ((mov, 0), (composite_mp4, 1)):
        found_rate, tags, audio, _ = _tags(path)
        assert (found_rate, tags, audio) == (rate, (1, 1, 1), sound), (path.name, found_rate, tags, audio)
    # our VIDEO output carries the exact rate (tests/test_node_graph.py); core Save Video writes it
    # to three decimals (24000/1001 -> 2997/125) and leaves the colour tags unset
    found_rate, _, audio, _ = _tags(saved_video)
    assert abs(found_rate - rate) < Fraction(1, 1000) and audio == 1, (found_rate, audio)
    metadata = _tags(mov)[3]
    assert json.loads(metadata["workflow"]) == ui and "VeraSampler" in metadata["prompt"]
    finals = sorted(p for p in paths if p.parent.name.endswith("final_composite") and p.suffix == ".png")
    alphas = sorted(p for p in paths if p.parent.name.endswith("_alpha") and p.suffix == ".png")
    assert len(finals) == len(alphas) == 17
    text = Image.open(finals[0]).text
    assert json.loads(text["workflow"]) == ui
    embedded = json.loads(text["prompt"])  # the prompt as ComfyUI ran it (it adds is_changed keys)
    assert {k: (n["class_type"], n["inputs"]) for k, n in embedded.items()} == \
        {k: (n["class_type"], n["inputs"]) for k, n in workflow.items()}
    final = torch.stack([video.read_png(p) for p in finals])
    alpha = torch.stack([video.read_png(p) for p in alphas])[..., 0]
    untouched = alpha == 0
    assert untouched.any() and (~untouched).any()
    assert torch.equal(final[untouched], source[untouched]), "pixels outside the matte changed"
    assert (video.read_rgba_video(mov)[..., 3].int() - alpha.int()).abs().max() <= 1
    settings = json.loads(next(p for p in paths if p.name.endswith("settings.json")).read_text())
    assert settings["clip"]["fps"] == str(rate) and settings["model"] == "vera-tiny"
    assert settings["prompt"] == workflow[client.find_node(workflow, "Positive prompt")]["inputs"]["text"]
    assert settings["steps"] == 4 and settings["frames"] == 17 and settings["size"] == [176, 144]
    print(f"{float(rate):.3f} fps: .mov {_tags(mov)[0]}, BT.709 tags, {len(paths)} files, "
          f"{float(untouched.float().mean()):.1%} of pixels untouched and bit-exact")


def test_rgba_image_and_masks_meet_core_nodes_without_inversion(server, tmp_path):
    """edit_rgba -> SaveImage, mask (1 = transparent) -> JoinImageWithAlpha, alpha (1 = opaque)
    -> ImageCompositeMasked: each gives the matte the right way round."""
    clip, source = _clip_at(tmp_path, Fraction(25))
    comfy = client.ComfyClient(server)
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    client.set_input(workflow, "Vera Encode", "frame_count", 5)
    client.set_input(workflow, "Vera Sampler", "steps", 3)
    client.set_input(workflow, "Vera Sampler", "seed", time.time_ns() % 100000)
    decode = client.find_node(workflow, "Vera Decode Layers")
    tag = time.time_ns()
    workflow.update({
        "90": {"class_type": "SaveImage", "inputs": {"images": [decode, 4],
                                                      "filename_prefix": f"rgba_{tag}"}},
        "91": {"class_type": "JoinImageWithAlpha", "inputs": {"image": [decode, 0],
                                                               "alpha": [decode, 5]}},
        "92": {"class_type": "SaveImage", "inputs": {"images": ["91", 0],
                                                      "filename_prefix": f"joined_{tag}"}},
        "93": {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": [decode, 3], "source": [decode, 0], "x": 0, "y": 0,
            "resize_source": False, "mask": [decode, 1]}},
        "94": {"class_type": "SaveImage", "inputs": {"images": ["93", 0],
                                                      "filename_prefix": f"masked_{tag}"}},
    })
    entry = comfy.wait(comfy.submit(workflow), {}, time.time() + 600, log=lambda *_: None)
    paths = [comfy.download(item, tmp_path / "out")[0] for item in client.output_files(entry)]
    alphas = sorted(p for p in paths if p.parent.name.endswith("_alpha") and p.suffix == ".png")
    finals = sorted(p for p in paths if p.parent.name.endswith("final_composite") and p.suffix == ".png")
    alpha = torch.stack([video.read_png(p) for p in alphas])[..., 0]
    final = torch.stack([video.read_png(p) for p in finals])
    pick = lambda prefix: torch.stack([video.read_png(p) for p in sorted(paths)
                                       if p.name.startswith(prefix)])
    rgba, joined, masked = pick(f"rgba_{tag}"), pick(f"joined_{tag}"), pick(f"masked_{tag}")
    assert rgba.shape[-1] == joined.shape[-1] == 4 and masked.shape[-1] == 3
    assert (alpha == 0).any() and (alpha > 0).any()
    assert (rgba[..., 3].int() - alpha.int()).abs().max() <= 1, "SaveImage alpha is not our matte"
    assert (joined[..., 3].int() - alpha.int()).abs().max() <= 1, "JoinImageWithAlpha inverted it"
    assert (masked.int() - final.int()).abs().max() <= 1, "ImageCompositeMasked is not eq. 2"
    untouched = alpha == 0
    assert torch.equal(masked[untouched], source[:5][untouched])


def test_step_caching_in_a_real_comfyui_skips_evaluations_and_records_the_saving(server, tmp_path):
    """The shipped vera-tiny workflow with a Vera Cache on its sampler: settings.json records the
    cache and fewer computed model evaluations; the server log has the sampler's saving line."""
    comfy = client.ComfyClient(server)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    workflow["900"] = {"class_type": "VeraCache", "_meta": {"title": "Vera Cache"},
                       "inputs": {"cache_method": "easycache", "cache_threshold": 0.2,
                                  "cache_start": 0.15, "cache_end": 0.95}}
    workflow[client.find_node(workflow, "Vera Sampler")]["inputs"]["cache"] = ["900", 0]
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    client.set_input(workflow, "Vera Encode", "frame_count", 5)
    client.set_input(workflow, "Vera Sampler", "steps", 20)
    client.set_input(workflow, "Vera Sampler", "seed", time.time_ns() % 100000)
    entry = comfy.wait(comfy.submit(workflow), {}, time.time() + 600, log=lambda *_: None)
    paths = [comfy.download(item, tmp_path / "out")[0] for item in client.output_files(entry)]
    settings = json.loads(next(p for p in paths if p.name.endswith("settings.json")).read_text())
    evaluations = settings["model_evaluations"]
    assert settings["cache_method"] == "easycache" and settings["cache_threshold"] == 0.2
    assert evaluations["full"] + evaluations["cached"] == 2 * 20 and evaluations["cached"] > 0
    if os.environ.get("COMFYUI_LOG"):
        log = Path(os.environ["COMFYUI_LOG"]).read_text(errors="replace")
        assert f"computed {evaluations['full']} of 40 model evaluations" in log
    print(f"step cache in ComfyUI: {evaluations['full']} of 40 model evaluations computed")


def test_compiled_blocks_run_in_a_real_comfyui_on_its_own_layers(server, tmp_path):
    """Load Vera Model with compile on: the model is built from ComfyUI's layers (comfy.ops) and
    handed to its manager; the compiled blocks run the shipped workflow to the end."""
    comfy = client.ComfyClient(server)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    client.set_input(workflow, "Load Vera Model", "compile", True)
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    client.set_input(workflow, "Vera Encode", "frame_count", 5)
    client.set_input(workflow, "Vera Sampler", "steps", 3)
    client.set_input(workflow, "Vera Sampler", "seed", time.time_ns() % 100000)
    entry = comfy.wait(comfy.submit(workflow), {}, time.time() + 600, log=lambda *_: None)
    assert client.output_files(entry)
    if os.environ.get("COMFYUI_LOG"):
        log = Path(os.environ["COMFYUI_LOG"]).read_text(errors="replace")
        assert "Vera compile: blocks compiled (first layer" in log, log[-3000:]
        assert "running uncompiled" not in log, log[-3000:]


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs COMFYUI_DIR (to put a LoRA into its models/loras)")
def test_a_vera_lora_node_in_a_real_comfyui_matches_the_library_and_survives_free(server, tmp_path):
    """The shipped vera-tiny workflow with a Vera LoRA between the loader and the sampler: ComfyUI
    applies it as its own weight patches; the final composite equals the library's unmerged LoRA
    edit within a level, and after POST /free a rerun gives the same frames."""
    from vera.edit import pipeline
    from vera.edit.bundle import load_bundle

    from helpers import tiny_lora

    name = "vera_test_tiny_lora.safetensors"
    target = Path(COMFYUI_DIR) / "models" / "loras" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # ours, from an earlier run
        target.unlink()
    target.symlink_to(tiny_lora(tmp_path / name))
    comfy = client.ComfyClient(server)
    clip = tmp_path / "vera_example.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    workflow = client.load_workflow(ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json")
    loader = client.find_node(workflow, "Load Vera Model")
    workflow["901"] = {"class_type": "VeraLoRA", "_meta": {"title": "Vera LoRA"},
                       "inputs": {"vera_model": [loader, 0], "lora_name": name, "strength": 0.8,
                                  "branches": "edit+composite"}}
    sampler = workflow[client.find_node(workflow, "Vera Sampler")]
    sampler["inputs"]["vera_model"] = ["901", 0]
    client.set_input(workflow, "Source video", "file", comfy.upload(clip))
    client.set_input(workflow, "Vera Encode", "frame_count", 5)
    client.set_input(workflow, "Vera Sampler", "steps", 3)
    client.set_input(workflow, "Vera Sampler", "seed", 11)

    def finals(entry, folder):
        paths = [comfy.download(item, tmp_path / folder)[0] for item in client.output_files(entry)]
        pngs = sorted(p for p in paths if p.parent.name.endswith("final_composite") and p.suffix == ".png")
        return torch.stack([video.read_png(p) for p in pngs])

    first = finals(comfy.wait(comfy.submit(workflow), {}, time.time() + 600, log=lambda *_: None), "a")
    source, _ = video.read_frames(clip, 5)
    inputs = sampler["inputs"]
    bundle = load_bundle("vera-tiny", "fp32", "cpu", loras=[f"{target}:0.8:edit,composite"])
    settings = bundle.defaults.updated(steps=3, seed=11, cfg=inputs["cfg"], shift=inputs["shift"],
                                       sampler=inputs["sampler"], negative_prompt="",
                                       alpha_cutoff=workflow["20"]["inputs"]["alpha_cutoff"])
    prompt = workflow[client.find_node(workflow, "Positive prompt")]["inputs"]["text"]
    ref = pipeline.edit(bundle, source, prompt, settings, frame_policy="crop", work_size=(64, 64))
    difference = (first.int() - ref.final.int()).abs()
    assert difference.max() <= 1, f"{int(difference.max())} levels from the library's LoRA edit"
    plain = load_bundle("vera-tiny", "fp32", "cpu")
    without = pipeline.edit(plain, source, prompt, settings, frame_policy="crop", work_size=(64, 64))
    assert (first.int() - without.final.int()).abs().max() > 1  # the LoRA changed the edit
    # unload every model and drop ComfyUI's cache: the rerun loads, patches and samples again
    free = urllib.request.Request(f"{server}/free", method="POST",
                                  data=json.dumps({"unload_models": True, "free_memory": True}).encode(),
                                  headers={"Content-Type": "application/json"})
    urllib.request.urlopen(free, timeout=30).read()
    deadline = time.time() + 60  # the server frees between prompts
    while _get(server, "/vera/status")["loaded"] and time.time() < deadline:
        time.sleep(0.5)
    assert _get(server, "/vera/status")["loaded"] == []
    client.set_input(workflow, "Vera Save Layers", "filename_prefix", "vera/lora_after_free")
    second = finals(comfy.wait(comfy.submit(workflow), {}, time.time() + 600, log=lambda *_: None), "b")
    assert torch.equal(first, second)
    print(f"Vera LoRA in ComfyUI: {len(first)} frames within {int(difference.max())} level(s) of "
          "the library; identical after /free")

"""Bad inputs across the CLI, the nodes, the checkpoint reader, the dataset checker and the client.

Every case asserts how it ends (exit code or exception type), that the message names the input that
was wrong, and that none of the user's files changed. The matrix is the table in the closing note of
the issue that asked for it; add a row when a new kind of bad input turns up.
"""

import hashlib
import json
import socket
import struct
import threading
from pathlib import Path

import pytest
import torch
from helpers import run_node

from vera import client
from vera.__main__ import main as cli
from vera.data.clips import bundled_clip
from vera.media.video import write_png

PROMPT = "add a large red circle moving from left to right"


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its content hash (to check the user's files are unchanged)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def user(tmp_path):
    """A user's folder: a clip, an earlier run's report, PNGs with one odd frame, bad files"""
    (tmp_path / "clip.mp4").write_bytes(bundled_clip().read_bytes())
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes(bundled_clip().read_bytes()[:3000])
    (tmp_path / "notes.mp4").write_text("shot list, not a video")
    (tmp_path / "earlier_run").mkdir()
    (tmp_path / "earlier_run" / "report.json").write_text('{"mine": true}')
    (tmp_path / "a_file").write_text("keep me")
    frames = tmp_path / "frames"
    for i in range(5):
        write_png(
            torch.full((64 if i != 3 else 48, 64, 3), 40 * i, dtype=torch.uint8),
            frames / f"f_{i:03d}.png",
        )
    return tmp_path


def edit_args(user, *extra, out="new_out"):
    return ["edit", "--prompt", PROMPT, "--out", str(user / out), "--steps", "2", *extra]


def _bad_lora(folder: Path, kind: str) -> str:
    """A LoRA file vera-tiny (width 128) must refuse, written beside the user's folder (whose
    snapshot the test compares)."""
    from vera.checkpoints.safetensors_io import atomic_save

    q = "diffusion_model.blocks.0.self_attn.q"
    tensors = {
        "i2v": {"diffusion_model.blocks.0.cross_attn.k_img.lora_A.weight": torch.zeros(4, 128)},
        "14b": {f"{q}.lora_A.weight": torch.zeros(4, 5120),
                f"{q}.lora_B.weight": torch.zeros(5120, 4)},
        "ranks": {f"{q}.lora_A.weight": torch.zeros(4, 128),
                  f"{q}.lora_B.weight": torch.zeros(128, 8)},
        "nan": {f"{q}.lora_A.weight": torch.full((4, 128), float("nan")),
                f"{q}.lora_B.weight": torch.zeros(128, 4)},
    }[kind]
    (folder.parent / "loras").mkdir(exist_ok=True)
    return str(atomic_save(tensors, folder.parent / "loras" / f"lora_{kind}.safetensors"))


# (id, extra arguments or a function of the user folder, exit code, text the message names)
NEEDS_A_CPU_ONLY_MACHINE = {"CUDA device without CUDA", "xformers without CUDA"}
CLI_CASES = [
    ("steps 0", ["--steps", "0"], 2, "steps = 0"),
    ("steps negative", ["--steps", "-4"], 2, "steps = -4"),
    ("cfg nan", ["--cfg", "nan"], 2, "cfg = nan"),
    ("cfg inf", ["--cfg", "inf"], 2, "cfg = inf"),
    ("cfg 0", ["--cfg", "0"], 2, "cfg = 0.0"),
    ("shift negative", ["--shift", "-1"], 2, "shift = -1.0"),
    ("shift nan", ["--shift", "nan"], 2, "shift = nan"),
    ("seed negative", ["--seed", "-1"], 2, "seed = -1"),
    ("alpha cutoff above 1", ["--alpha-cutoff", "2"], 2, "alpha_cutoff = 2.0"),
    ("cache threshold nan", ["--cache", "on", "--cache-threshold", "nan"], 2,
     "cache_threshold = nan"),
    ("cache threshold negative", ["--cache-threshold", "-0.1"], 2, "cache_threshold = -0.1"),
    ("cache threshold too high", ["--cache", "on", "--cache-threshold", "50"], 2,
     "cache_threshold = 50.0: must be a finite number above 0 and at most 5"),
    ("cache end above 1", ["--cache-end", "1.5"], 2, "cache_end = 1.5"),
    ("cache start nan", ["--cache-start", "nan"], 2, "cache_start = nan"),
    ("cache start after its end", ["--cache", "on", "--cache-start", "0.9", "--cache-end", "0.5"],
     2, "cache_start = 0.9 and cache_end = 0.5: the start must come before the end"),
    ("cache off with a method", ["--cache", "off", "--cache-method", "easycache"], 2,
     "--cache off and --cache-method easycache: give one of them"),
    ("lora strength nan", ["--lora", "style.safetensors:nan"], 2, "strength nan: must be a finite"),
    ("lora strength absurd", ["--lora", "style.safetensors:1e6"], 2, "strength 1000000.0"),
    ("lora unknown branch", ["--lora", "style.safetensors:1:edit,matte"], 2,
     "branches edit,matte: each must be one of edit, alpha, composite"),
    ("lora missing", lambda u: ["--lora", str(u / "gone.safetensors")], 2,
     "gone.safetensors: no such LoRA file"),
    ("lora pickle", lambda u: ["--lora", str(u / "notes.mp4")], 2,
     "LoRAs are read from .safetensors files only"),
    ("lora that is a VAE", lambda u: ["--lora", str(u / "vae.safetensors")], 2,
     "vae.safetensors: no tensor matches a layer of Vera / Wan2.1"),
    ("lora for I2V", lambda u: ["--lora", _bad_lora(u, "i2v")], 2, "an image-to-video (I2V) LoRA"),
    ("lora for 14B", lambda u: ["--lora", _bad_lora(u, "14b")], 2,
     "a LoRA for another model or width"),
    ("lora ranks differ", lambda u: ["--lora", _bad_lora(u, "ranks")], 2, "their ranks differ"),
    ("lora with NaN", lambda u: ["--lora", _bad_lora(u, "nan")], 2, "NaN or infinite values"),
    ("frames 0", ["--frames", "0"], 2, "--frames 0: must be at least 1"),
    ("frames negative", ["--frames", "-5"], 2, "--frames -5: must be at least 1"),
    ("frames past the cap without windows", ["--window", "0", "--frames", "500"], 2,
     "--window 0 with --frames 500: without context windows Vera edits at most 161"),
    ("start negative", ["--start", "-3"], 2, "--input: first frame -3"),
    (
        "start past the end",
        ["--start", "100000"],
        2,
        "no frames left after skipping the first 100000",
    ),
    (
        "missing input",
        lambda u: ["--input", str(u / "missing.mp4")],
        2,
        "missing.mp4 does not exist",
    ),
    (
        "empty input",
        lambda u: ["--input", str(u / "empty.mp4")],
        2,
        "empty.mp4: FFmpeg cannot read it (empty",
    ),
    (
        "truncated input",
        lambda u: ["--input", str(u / "truncated.mp4")],
        2,
        "truncated.mp4: FFmpeg cannot read it (truncated",
    ),
    (
        "text file as input",
        lambda u: ["--input", str(u / "notes.mp4")],
        2,
        "notes.mp4: FFmpeg cannot read it",
    ),
    (
        "PNG folder with an odd frame",
        lambda u: ["--input", str(u / "frames")],
        2,
        "frame f_003.png is 64x48x3 but f_000.png is 64x64x3",
    ),
    ("missing mask", lambda u: ["--mask", str(u / "gone.mp4")], 2, "gone.mp4 does not exist"),
    (
        "size not a multiple of 16",
        ["--size", "60x64"],
        2,
        "--size 60x64: width and height must be multiples",
    ),
    ("size not a size", ["--size", "big"], 2, "--size 'big'"),
    (
        "CUDA device without CUDA",
        ["--device", "cuda"],
        2,
        "device 'cuda': this machine has no CUDA",
    ),
    (
        "xformers on the CPU",
        ["--attention", "xformers", "--device", "cpu"],
        2,
        "attention backend 'xformers'",
    ),
    (
        "model file missing",
        lambda u: ["--model", str(u / "gone.safetensors"), "--vae", "v", "--text-encoder", "t"],
        2,
        "gone.safetensors: no such file",
    ),
    (
        "model file without its VAE",
        ["--model", "Vera-MoT-1.3B.safetensors"],
        2,
        "--vae FILE and --text-encoder",
    ),
    (
        "VAE given as the model",
        lambda u: ["--model", str(u / "vae.safetensors"), "--vae", "v", "--text-encoder", "t"],
        2,
        "this is a VAE file",
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_edit_command_refuses_bad_values_clearly(case, user, files, capsys):
    label, extra, code, named = case
    if label in NEEDS_A_CPU_ONLY_MACHINE and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so the input is not bad here")
    (user / "vae.safetensors").write_bytes(files["vae_original"].read_bytes())
    before = snapshot(user)
    extra = extra(user) if callable(extra) else extra
    assert cli(edit_args(user, *extra)) == code
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err
    assert snapshot(user) == before and not (user / "new_out").exists()


@pytest.mark.parametrize("prompt", ["", "   \t"], ids=["empty", "blank"])
def test_edit_command_refuses_an_empty_instruction_unless_asked(prompt, user, capsys):
    before = snapshot(user)
    assert cli(["edit", "--prompt", prompt, "--out", str(user / "o")]) == 2
    assert "--prompt is empty" in capsys.readouterr().err and snapshot(user) == before


def test_edit_command_never_writes_into_a_users_folder(user, capsys):
    before = snapshot(user)
    assert cli(edit_args(user, out="earlier_run")) == 2
    assert "earlier_run already holds files" in capsys.readouterr().err and snapshot(user) == before
    assert cli(edit_args(user, out="a_file")) == 2
    assert "a_file is a file" in capsys.readouterr().err and snapshot(user) == before
    assert cli(edit_args(user, out="a_file/sub")) == 2  # the parent is a file: not writable
    err = capsys.readouterr().err
    assert "cannot write into" in err and "a_file is a file, not a folder" in err, err
    assert snapshot(user) == before
    assert not list(user.glob(".*partial"))


def test_edit_command_replaces_a_run_only_when_asked_and_only_when_complete(user, monkeypatch):
    from vera.edit import shot

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of the run

    before = snapshot(user)
    monkeypatch.setattr(shot, "edit_shot", fail)
    assert cli(edit_args(user, "--overwrite", out="earlier_run")) == 130
    assert snapshot(user) == before and not list(user.glob(".*partial"))  # nothing half-written
    monkeypatch.undo()
    assert cli(edit_args(user, "--overwrite", "--frames", "5", out="earlier_run")) == 0
    report = json.loads((user / "earlier_run" / "report.json").read_text())
    assert report["frames"] == 5 and "mine" not in report
    assert len(list((user / "earlier_run" / "final_composite").glob("*.png"))) == 5


# -- checkpoint files ------------------------------------------------------------------------------
def _safetensors(header, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


F32 = lambda offsets, shape=(2,): {"dtype": "F32", "shape": list(shape), "data_offsets": offsets}
HEADER_CASES = [
    ("header is a JSON list", _safetensors([1, 2]), "header is a JSON list"),
    (
        "missing dtype",
        _safetensors({"w": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
        "'w'.*dtype None",
    ),
    (
        "unknown dtype",
        _safetensors({"w": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
        "dtype 'F7'",
    ),
    (
        "string metadata",
        _safetensors({"__metadata__": "yes", "w": F32([0, 8])}, bytes(8)),
        "__metadata__",
    ),
    ("deeply nested header", _safetensors(b"[" * 200_000 + b"]" * 200_000), "not valid JSON"),
    (
        "overlapping offsets",
        _safetensors({"a": F32([0, 8]), "b": F32([4, 12])}, bytes(12)),
        "'b' overlaps",
    ),
    ("reversed offsets", _safetensors({"w": F32([8, 0])}, bytes(8)), "data_offsets \\[8, 0\\]"),
    ("negative offsets", _safetensors({"w": F32([-8, 0])}, bytes(8)), "data_offsets \\[-8, 0\\]"),
    ("overflowing shape", _safetensors({"w": F32([0, 8], (2**62, 2**62))}, bytes(8)), "'w'.*shape"),
    (
        "size does not match the shape",
        _safetensors({"w": F32([0, 8], (3,))}, bytes(8)),
        "spans 8 bytes",
    ),
    ("truncated data", _safetensors({"w": F32([0, 800], (200,))}, bytes(8)), "truncated"),
    ("empty file", b"", "too short"),
    ("header length past the end", struct.pack("<Q", 10**9) + b"{}", "header length"),
    ("not JSON", _safetensors(b"\xff\xfe garbage"), "not valid JSON"),
]


@pytest.mark.parametrize("case", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_damaged_model_files_are_refused_by_name(case, tmp_path, capsys):
    _, data, message = case
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert cli(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert path.read_bytes() == data


def test_pickle_checkpoints_and_unknown_head_counts(tmp_path, files, capsys):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04not really")
    assert cli(["info", str(pickle)]) == 2 and "model.ckpt" in capsys.readouterr().err
    # a width-64 Wan file: every size but the head count is in its shapes; info prints them all
    assert cli(["info", str(files["wan_original"])]) == 0
    out = capsys.readouterr().out
    assert (
        "wan-original" in out and "head count of a width-64 model" in out and "--num-heads" in out
    )
    config_line = next(line for line in out.splitlines() if line.startswith("config:"))
    for size in ("dim=64", "num_layers=2", "ffn_dim=128", "text_dim=32", "freq_dim=32",
                 "in_channels=16", "out_channels=16", "patch_size=(1, 2, 2)"):
        assert size in config_line, out
    assert "num_heads" not in config_line and "heads:      unknown" in out


# -- nodes (called as ComfyUI's executor calls them) -----------------------------------------------
def _frames(t=5, h=32, w=32):
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(t))


NODE_CASES = [  # (id, node, inputs, exception type name, text)
    ("sampler cfg NaN", "VeraSampler", dict(cfg=float("nan")), "SettingsError", "cfg = nan"),
    ("sampler steps 0", "VeraSampler", dict(steps=0), "SettingsError", "steps = 0"),
    ("sampler shift inf", "VeraSampler", dict(shift=float("inf")), "SettingsError", "shift = inf"),
    (
        "sampler unknown sampler",
        "VeraSampler",
        dict(sampler="ddim"),
        "SettingsError",
        "sampler = 'ddim'",
    ),
    (
        "decode cutoff NaN",
        "VeraDecodeLayers",
        dict(vae=None, vera_layers=None, alpha_cutoff=float("nan")),
        "SettingsError",
        "alpha_cutoff = nan",
    ),
    (
        "save prefix climbs out",
        "VeraSaveLayers",
        dict(filename_prefix="../../etc/x"),
        "ValueError",
        "filename_prefix",
    ),
    (
        "save prefix too long",
        "VeraSaveLayers",
        dict(filename_prefix="x" * 300),
        "ValueError",
        "filename_prefix: 'xxxx",
    ),
    (
        "encode bad frame count",
        "VeraEncode",
        dict(frames=_frames(t=10)),
        "ValueError",
        "frames: bad 10 frames",
    ),
    (
        "encode one work size",
        "VeraEncode",
        dict(frames=_frames(), work_width=64),
        "ValueError",
        "work_width",
    ),
    (
        "encode mask of another aspect ratio",
        "VeraEncode",
        dict(frames=_frames(), edit_region=torch.ones(1, 16, 8)),
        "ValueError",
        "edit_region is 8x16 but the video is 32x32: a different aspect ratio",
    ),
    (
        "encode no source",
        "VeraEncode",
        dict(),
        "ValueError",
        "connect the source to video",
    ),
    (
        "encode video and frames",
        "VeraEncode",
        dict(frames=_frames(), video=object()),
        "ValueError",
        "not both",
    ),
    (
        "encode past the frame cap",
        "VeraEncode",
        dict(frames=_frames(), frame_count=100001),
        "ValueError",
        "frame_count 100001: at most 100000 frames",
    ),
    (
        "encode start past the end",
        "VeraEncode",
        dict(frames=_frames(), start_frame=50),
        "ValueError",
        "frames: start_frame 50 is past its last frame",
    ),
    (
        "save bad exr choice",
        "VeraSaveLayers",
        dict(exr="log"),
        "ValueError",
        "exr 'log'",
    ),
    (
        "composite matte of another size",
        "VeraComposite",
        dict(source=_frames(), edit_layer=_frames(), alpha=torch.ones(5, 16, 16)),
        "ValueError",
        "alpha: matte is",
    ),
    (
        "load a file that is gone",
        "VeraLoadModel",
        dict(model_name="gone.safetensors"),
        "FileNotFoundError",
        "gone.safetensors",
    ),
    ("cache threshold NaN", "VeraCache", dict(cache_threshold=float("nan")), "SettingsError",
     "cache_threshold = nan"),
    ("lora strength NaN", "VeraLoRA", dict(strength=float("nan")), "LoraError", "strength nan"),
    ("lora unknown branches", "VeraLoRA", dict(branches="matte"), "ValueError", "branches 'matte'"),
    ("lora file gone", "VeraLoRA", dict(lora_name="gone.safetensors"), "FileNotFoundError",
     "'gone.safetensors' is not in models/loras"),
    ("cache unknown method", "VeraCache", dict(cache_method="teacache"), "SettingsError",
     "cache_method = 'teacache'"),
    ("cache start after its end", "VeraCache", dict(cache_start=0.9, cache_end=0.2),
     "SettingsError", "the start must come before the end"),
    (
        "xformers without CUDA",
        "VeraLoadModel",
        dict(model_name="vera-tiny", attention="xformers"),
        "ValueError",
        "attention backend 'xformers'",
    ),
]


class _TinyHandle:
    """What a Vera LoRA node needs of a loaded model before it reads any file."""

    model = None
    manager = None
    loras: list = []
    lora_patches: list = []


class _StubVAE:
    latent_channels, latent_dim = 16, 3

    def encode(self, frames):
        return torch.zeros(
            1, 16, 1 + (frames.shape[0] - 1) // 4, frames.shape[1] // 8, frames.shape[2] // 8
        )


@pytest.mark.parametrize("case", NODE_CASES, ids=[c[0] for c in NODE_CASES])
def test_nodes_refuse_bad_values_by_name(case, pack, tmp_path, monkeypatch):
    label, node, given, error, text = case
    if label in NEEDS_A_CPU_ONLY_MACHINE and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so the input is not bad here")
    monkeypatch.setenv("VERA_OUTPUT_DIR", str(tmp_path / "output"))
    defaults = {
        "VeraSampler": dict(
            vera_model=None,
            positive=None,
            negative=None,
            vera_source=None,
            seed=0,
            steps=4,
            cfg=2.0,
            shift=3.0,
            sampler="euler",
        ),
        "VeraSaveLayers": dict(edit_layer=_frames(), alpha=torch.ones(5, 32, 32), final=_frames()),
        "VeraEncode": dict(vae=_StubVAE(), frame_policy="error", work_width=0, work_height=0),
        "VeraLoadModel": dict(weight_dtype="auto", attention="auto"),
        "VeraCache": dict(cache_method="easycache", cache_threshold=0.2, cache_start=0.15,
                          cache_end=0.95),
        "VeraLoRA": dict(vera_model=_TinyHandle(), lora_name="style.safetensors", strength=1.0,
                         branches="all"),
    }.get(node, {})
    with pytest.raises(Exception) as caught:
        run_node(pack, node, **{**defaults, **given})
    assert type(caught.value).__name__ == error and text in str(caught.value), repr(caught.value)
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").rglob("*.png"))


def test_comfyui_shows_our_errors_by_their_path_inside_vera(tmp_path):
    """ComfyUI imports a pack under its folder path (dots as `_x_`) and shows an exception's type as
    `module.qualname` (execution.full_type_name): ours must read `vera.<wing>.<module>.<Error>`."""
    import importlib.util
    import sys

    from helpers import ROOT

    name = str(tmp_path / "custom_nodes" / "ComfyUI-Vera").replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
        with pytest.raises(Exception) as caught:
            run_node(loaded, "VeraSampler", vera_model=None, positive=None, negative=None,
                     vera_source=None, seed=0, steps=4, cfg=float("nan"), shift=3.0,
                     sampler="euler")
    finally:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]
    kind = type(caught.value)
    assert f"{kind.__module__}.{kind.__qualname__}" == "vera.sampling.settings.SettingsError"
    assert "cfg = nan" in str(caught.value)


# -- the dataset checker ---------------------------------------------------------------------------
def _dataset(root: Path, line) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = (
        line
        if isinstance(line, bytes)
        else (json.dumps(line) if not isinstance(line, str) else line).encode()
    )
    (root / "manifest.jsonl").write_bytes(data + b"\n")
    return root


GOOD = dict(
    id="s1",
    task="object_addition",
    instruction="add a ball",
    source="s1/source",
    edit="s1/edit",
    alpha="s1/alpha",
    composite="s1/composite",
)
DATA_CASES = [
    ("line not JSON", "{not json", "manifest.jsonl line 1: not valid JSON"),
    ("line is a list", [1, 2], "line 1: a sample must be a JSON object"),
    ("manifest not UTF-8", b"\xff\xfe{}", "not UTF-8"),
    (
        "absolute path",
        {**GOOD, "source": "/etc/passwd"},
        "source path '/etc/passwd' leaves the dataset folder",
    ),
    (
        "path climbing out",
        {**GOOD, "edit": "../../secrets.png"},
        "edit path '../../secrets.png' leaves",
    ),
    ("path not text", {**GOOD, "alpha": 5}, "alpha must be a relative path"),
    ("fps not a number", {**GOOD, "fps": "fast"}, "fps must be a number"),
    ("instruction not text", {**GOOD, "instruction": ["add"]}, "instruction must be text"),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_dataset_checker_names_the_file_line_and_field(case, tmp_path, capsys):
    _, line, text = case
    root = _dataset(tmp_path / "data", line)
    before = snapshot(tmp_path)
    assert cli(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before


def test_dataset_checker_without_a_manifest(tmp_path, capsys):
    assert cli(["data", "check", str(tmp_path)]) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err


# -- the headless client ---------------------------------------------------------------------------
WORKFLOW = (
    Path(__file__).resolve().parents[1] / "workflows" / "api" / "vera_tiny_object_addition_api.json"
)


@pytest.fixture
def not_http():
    """A TCP server that answers everything with a line that is not HTTP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_refuses_bad_inputs_before_anything_reaches_a_server(tmp_path, capsys):
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    latin = tmp_path / "latin1.json"
    latin.write_bytes(b'{"1": "caf\xe9"}')
    cached = tmp_path / "cached.json"  # the shipped workflow with a Vera Cache on its sampler
    graph = json.loads(WORKFLOW.read_text())
    graph["90"] = {"class_type": "VeraCache", "_meta": {"title": "Vera Cache"},
                   "inputs": {"cache_method": "easycache", "cache_threshold": 0.2,
                              "cache_start": 0.15, "cache_end": 0.95}}
    graph[client.find_node(graph, "Vera Sampler")]["inputs"]["cache"] = ["90", 0]
    cached.write_text(json.dumps(graph))
    server = f"127.0.0.1:{_free_port()}"  # nothing listens: these must fail before any request
    cases = [
        (["--workflow", str(listed)], 2, "is a JSON list"),
        (["--workflow", str(latin)], 2, "is not UTF-8"),
        (["--workflow", str(tmp_path / "gone.json")], 2, "gone.json does not exist"),
        (["--workflow", str(WORKFLOW), "--set", "Vera Sampler.cfg=NaN"], 2, "cfg = nan"),
        (["--workflow", str(WORKFLOW), "--set", "Vera Sampler.steps=-1"], 2, "steps = -1"),
        (["--workflow", str(cached), "--set", "Vera Cache.cache_threshold=NaN"], 2,
         "cache_threshold = nan"),
        (["--workflow", str(cached), "--set", "Vera Cache.cache_end=3"], 2, "cache_end = 3"),
        (["--workflow", str(WORKFLOW), "--prompt", "  "], 2, "--prompt is empty"),
        (["--workflow", str(WORKFLOW), "--set", "Sampler.steps=3"], 1, "no node titled 'Sampler'"),
    ]
    for argv, code, text in cases:
        assert client.main(["--server", server, "--out", str(tmp_path / "o"), *argv]) == code, argv
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o").exists()


def test_client_explains_servers_it_cannot_use(tmp_path, not_http, capsys):
    assert (
        client.main(
            ["--server", not_http, "--workflow", str(WORKFLOW), "--out", str(tmp_path / "o")]
        )
        == 3
    )
    err = capsys.readouterr().err
    assert "did not answer /prompt as an HTTP server would" in err and "Traceback" not in err
    down = f"127.0.0.1:{_free_port()}"
    assert (
        client.main(["--server", down, "--workflow", str(WORKFLOW), "--out", str(tmp_path / "o")])
        == 3
    )
    err = capsys.readouterr().err
    assert f"cannot reach ComfyUI at http://{down}" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_client_ctrl_c_says_what_it_left_running_and_changes_no_file(tmp_path, monkeypatch, capsys):
    def interrupted(self, workflow, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the prompt is being queued

    workflow = tmp_path / "mine.json"
    workflow.write_bytes(WORKFLOW.read_bytes())
    monkeypatch.setattr(client.ComfyClient, "open_websocket", lambda self, log: None)
    monkeypatch.setattr(client.ComfyClient, "submit", interrupted)
    argv = ["--server", f"127.0.0.1:{_free_port()}", "--workflow", str(workflow),
            "--out", str(tmp_path / "o")]
    assert client.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted: stopped following the run" in err and "Traceback" not in err
    assert workflow.read_bytes() == WORKFLOW.read_bytes() and not (tmp_path / "o").exists()


def test_compile_where_it_cannot_work_says_why_once_and_the_edit_runs(user, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")  # torch.compile then has no C++ compiler here
    with caplog.at_level("WARNING"):
        assert cli(edit_args(user, "--compile")) == 0
    said = [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]
    assert said == ["Vera compile: no C++ compiler found (torch.compile builds CPU kernels with "
                    "one: install g++ or clang, or set CXX); running uncompiled"]
    assert (user / "new_out" / "report.json").is_file()

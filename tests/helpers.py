"""Shared test inputs, the workflow script, and calling a node as ComfyUI does."""
import importlib.util
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def workflow_script():
    """scripts/workflows.py as a module (it also imports the pack the way ComfyUI does: `load_pack`)."""
    name = "vera_workflow_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "workflows.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_node(pack, node_id, **inputs):
    """Call a node the way ComfyUI's executor does; returns (outputs tuple, ui dict or None)."""
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        return tuple(out.get("result", ())), out.get("ui")
    return out, None


def inputs(batch=1, frames=3, size=8, text=12, text_dim=32, seed=1, mask=False):
    g = torch.Generator().manual_seed(seed)
    lat = lambda: torch.randn(batch, 16, frames, size, size, generator=g)
    x = dict(edit=lat(), alpha=lat(), composite=lat(), source=lat(),
             timestep=torch.tensor([537.0] * batch), context=torch.randn(batch, text, text_dim, generator=g))
    if mask:
        x["mask"] = lat()
    return x


def names_the_pack(line: str, name: str) -> bool:
    """Whether a ComfyUI log line names this pack's folder: `custom_nodes/<name>` as a whole path
    component (a clone in a folder called `p` must not match `comfy_extras/nodes_audio.py`)."""
    return re.search(r"custom_nodes[\\/]" + re.escape(name) + r"(?![^\\/\s:])", line) is not None


def tiny_lora(path, seed=0):
    """A Wan-layout LoRA (peft names) for vera-tiny's width: q of block 0, the first FFN of block 1."""
    from vera.checkpoints.safetensors_io import atomic_save

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_f, in_f) in (("blocks.0.self_attn.q", (128, 128)), ("blocks.1.ffn.0", (256, 128))):
        tensors[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(8, in_f, generator=g) * 0.2
        tensors[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(out_f, 8, generator=g) * 0.2
    return atomic_save(tensors, path)


def half_broken_clip(path: Path, frames: int = 40) -> Path:
    """A 64x48 H.264 mp4 of random frames, its index first (faststart), cut in half: it opens,
    its first frames decode, and decoding breaks on a frame further on."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def pink_noise(samples: int, channels: int = 2, seed: int = 0) -> torch.Tensor:
    """float32 `[C, N]`: 1/f noise (broadband: a shift of one sample shows in the correlation)."""
    noise = torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed))
    spectrum = torch.fft.rfft(noise)
    frequency = torch.arange(spectrum.shape[-1]).clamp(min=1).float()
    wave = torch.fft.irfft(spectrum / frequency.sqrt(), n=samples)
    return (0.3 * wave / wave.abs().max()).float()


def lag_of(reference: torch.Tensor, other: torch.Tensor, most: int = 4096) -> tuple[int, float]:
    """(the shift in samples at which `other` best matches `reference`, that correlation)."""
    n = min(reference.shape[-1], other.shape[-1]) - 2 * most
    a = reference[most:most + n]
    scores = {lag: float(torch.dot(a, other[most + lag:most + lag + n])
                         / (a.norm() * other[most + lag:most + lag + n].norm()))
              for lag in range(-most, most + 1)}
    best = max(scores, key=scores.get)
    return best, scores[best]


def blender_comp(run: Path, out: Path) -> torch.Tensor | None:
    """Render a run's generated `comp_blender.py` headless with Blender into `out` -> uint8
    `[T, H, W, 3]` of the frames, or None where Blender is not installed."""
    import shutil
    import subprocess

    from vera.media.video import read_png

    blender = shutil.which("blender")
    if blender is None:
        return None
    done = subprocess.run([blender, "-b", "--factory-startup", "-P", str(run / "comp_blender.py"),
                           "--", "--render", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return torch.stack([read_png(p)[..., :3] for p in sorted(Path(out).glob("*.png"))])

"""Wan2.1 VAE through diffusers' AutoencoderKLWan: loading from ComfyUI/original or diffusers files,
normalised encode and chunked decode, and the frame codec the pipeline uses.

Inside this module videos are diffusers' `[B, C, T, H, W]` in [-1, 1]; the codec (`FrameCodec`)
speaks frames `[T, H, W, 3]` in [0, 1], as ComfyUI's IMAGE does. Latents are
`[B, 16, 1 + (T-1)/4, H/8, W/8]`, normalised as `(mu - latents_mean) / latents_std`.
"""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Callable, Protocol

import torch

from ..checkpoints.safetensors_io import CheckpointError, atomic_save, load_tensors, read_header
from ..frames.geometry import FRAME_STEP

_RESNET_RENAMES = [
    (r"\.residual\.0\.gamma$", ".norm1.gamma"), (r"\.residual\.2\.", ".conv1."),
    (r"\.residual\.3\.gamma$", ".norm2.gamma"), (r"\.residual\.6\.", ".conv2."), (r"\.shortcut\.", ".conv_shortcut."),
]
_FIXED = [
    (r"^conv1\.", "quant_conv."), (r"^conv2\.", "post_quant_conv."),
    (r"^(encoder|decoder)\.conv1\.", r"\1.conv_in."),
    (r"^(encoder|decoder)\.head\.0\.gamma$", r"\1.norm_out.gamma"), (r"^(encoder|decoder)\.head\.2\.", r"\1.conv_out."),
    (r"^(encoder|decoder)\.middle\.0\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.middle\.1\.", r"\1.mid_block.attentions.0."),
    (r"^(encoder|decoder)\.middle\.2\.", r"\1.mid_block.resnets.1."),
    (r"^encoder\.downsamples\.", "encoder.down_blocks."),
]


def is_original_layout(keys) -> bool:
    return any(k.startswith("decoder.middle.") or k.startswith("encoder.downsamples.") for k in keys)


def original_to_diffusers(keys: list[str]) -> dict[str, str]:
    """Map Wan original VAE keys to diffusers names, for any depth / number of res blocks.

    The decoder is a flat list in the original (`upsamples.N`): res blocks of a level, then its
    resample; diffusers nests it as `up_blocks.level.resnets.j` / `up_blocks.level.upsamplers.0`.
    """
    up_index = sorted({int(m.group(1)) for k in keys if (m := re.match(r"decoder\.upsamples\.(\d+)\.", k))})
    resample_at = {int(re.match(r"decoder\.upsamples\.(\d+)\.", k).group(1))
                   for k in keys if k.startswith("decoder.upsamples.") and (".resample." in k or ".time_conv." in k)}
    up_map, level, j = {}, 0, 0
    for i in up_index:
        if i in resample_at:
            up_map[i] = f"decoder.up_blocks.{level}.upsamplers.0."
            level, j = level + 1, 0
        else:
            up_map[i] = f"decoder.up_blocks.{level}.resnets.{j}."
            j += 1
    mapping = {}
    for key in keys:
        new = key
        m = re.match(r"decoder\.upsamples\.(\d+)\.", key)
        if m:
            new = up_map[int(m.group(1))] + key[m.end():]
        for pattern, repl in _FIXED + _RESNET_RENAMES:
            new = re.sub(pattern, repl, new)
        mapping[key] = new
    return mapping


def diffusers_to_original(keys: list[str]) -> dict[str, str]:
    """The inverse of `original_to_diffusers` (used to write ComfyUI-compatible VAE files)."""
    nested = sorted({(int(m.group(1)), m.group(2), int(m.group(3)))
                     for k in keys if (m := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.", k))})
    flat = {entry: i for i, entry in enumerate(nested)}
    mapping = {}
    inverse_fixed = [
        (r"^quant_conv\.", "conv1."), (r"^post_quant_conv\.", "conv2."),
        (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
        (r"^(encoder|decoder)\.norm_out\.gamma$", r"\1.head.0.gamma"), (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.middle.0."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.middle.2."),
        (r"^encoder\.down_blocks\.", "encoder.downsamples."),
        (r"\.norm1\.gamma$", ".residual.0.gamma"), (r"\.conv1\.", ".residual.2."),
        (r"\.norm2\.gamma$", ".residual.3.gamma"), (r"\.conv2\.", ".residual.6."), (r"\.conv_shortcut\.", ".shortcut."),
    ]
    for key in keys:
        new = key
        m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.", key)
        if m:
            new = f"decoder.upsamples.{flat[(int(m.group(1)), m.group(2), int(m.group(3)))]}." + key[m.end():]
        for pattern, repl in inverse_fixed:
            if pattern.startswith(r"\.") and not re.search(r"(downsamples|upsamples|middle\.[02])\.", new):
                continue  # resnet-internal names exist only inside res blocks
            new = re.sub(pattern, repl, new)
        mapping[key] = new
    return mapping


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """AutoencoderKLWan arguments implied by a diffusers-named state dict's shapes."""
    try:
        base_dim = shapes["encoder.conv_in.weight"][0]
        z_dim = shapes["post_quant_conv.weight"][0]
    except KeyError as missing:
        raise CheckpointError(f"not a Wan VAE state dict: tensor {missing} is missing") from None
    if any(".attentions." in k and "mid_block" not in k for k in shapes):
        raise CheckpointError("VAE with attention in its down/up blocks is not a Wan2.1 VAE")
    down = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
    mults, temporal, res_per_level = [], [], []
    count = 0
    for i in down:
        prefix = f"encoder.down_blocks.{i}."
        if prefix + "resample.1.weight" in shapes:
            temporal.append(prefix + "time_conv.weight" in shapes)
            res_per_level.append(count)
            count = 0
        else:
            out = shapes[prefix + "conv2.weight"][0]
            if count == 0:
                mults.append(out // base_dim)
            count += 1
    res_per_level.append(count)
    up_resnets = {int(m.group(1)) for k in shapes if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k))}
    return dict(base_dim=base_dim, z_dim=z_dim, dim_mult=mults, num_res_blocks=res_per_level[0],
                temperal_downsample=temporal, attn_scales=[], **({"decoder_base_dim": None} if up_resnets else {}))


def load_vae(path: str | Path, dtype=torch.float32, device="cpu"):
    """Load a Wan2.1 VAE from a ComfyUI/original `.safetensors`, a diffusers-named file, or a diffusers folder."""
    from diffusers import AutoencoderKLWan

    path = Path(path)
    if path.is_dir():
        return AutoencoderKLWan.from_pretrained(path, torch_dtype=dtype, local_files_only=True).to(device).eval()
    entries, metadata = read_header(path)
    keys = list(entries)
    if any(k.startswith("model.diffusion_model.") or k.startswith("blocks.0.") for k in keys):
        raise CheckpointError(f"{path}: this is a diffusion model, not a VAE; load it as the model instead")
    if is_original_layout(keys):
        names = original_to_diffusers(keys)
    elif any(k.startswith("encoder.conv_in.") for k in keys):
        names = {k: k for k in keys}
    else:
        raise CheckpointError(f"{path}: not a Wan VAE (first keys: {', '.join(sorted(keys)[:4])})")
    kwargs = config_from_shapes({names[k]: e.shape for k, e in entries.items()})
    if "config" in metadata:
        kwargs.update(json.loads(metadata["config"]))
    with torch.device("meta"):
        vae = AutoencoderKLWan(**kwargs)
    state = {names[k]: v.to(device=device, dtype=dtype) for k, v in load_tensors(entries).items()}
    expected = set(vae.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: VAE keys do not match a Wan2.1 VAE: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    vae.load_state_dict(state, strict=True, assign=True)
    return vae.eval()


def save_vae_original(vae, path: str | Path) -> Path:
    """Write a VAE in Wan original key names (what ComfyUI's VAELoader reads), config in the metadata."""
    state = vae.state_dict()
    names = diffusers_to_original(list(state))
    cfg = {k: v for k, v in dict(vae.config).items() if k in ("latents_mean", "latents_std", "decoder_base_dim", "clip_output")}
    return atomic_save({names[k]: v for k, v in state.items()}, path, {"config": json.dumps(cfg)})


def latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def frames_to_video(frames: torch.Tensor) -> torch.Tensor:
    """Frames `[T, H, W, C]` in [0, 1] -> diffusers' video layout `[1, C, T, H, W]` in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1).float()


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """`[1, C, T, H, W]` in [-1, 1] -> frames `[T, H, W, C]` in [0, 1]."""
    return ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


def _has_causal_loops(vae) -> bool:
    """Whether this diffusers version has the encoder / decoder cache loops the streams drive
    (diffusers' private internals, as in 0.35 to 0.42); on others the public, whole-clip
    `encode` / `decode` are used, and long shots cannot stream."""
    needed = ("_cached_conv_counts", "encoder", "decoder", "quant_conv", "post_quant_conv")
    if not all(hasattr(vae, name) for name in needed) or getattr(vae, "use_tiling", False):
        return False
    if getattr(vae.config, "patch_size", None) is not None:  # Wan2.2's VAE: not Vera's
        return False
    try:
        return "first_chunk" in inspect.signature(vae.decoder.forward).parameters
    except (TypeError, ValueError):
        return False


class CausalEncoder:
    """Encode a video in pieces through the VAE's causal cache, as diffusers' `encode` does in one
    call (frame 0 alone, then 4 frames at a time), so a long shot is encoded while it is read and
    never held whole. Each encoder keeps its own cache.

    `encode(video)`: `[1, 3, t, H, W]` in [-1, 1]; the first piece has 1 + 4k frames, later
    pieces 4k -> the VAE's own latent frames `[1, 16, t', H/8, W/8]` (posterior mean, float32, not
    normalised).
    """

    def __init__(self, vae):
        if not _has_causal_loops(vae):
            raise RuntimeError("this diffusers version's AutoencoderKLWan has no causal encode "
                               "loop Vera can drive (tested: 0.35 to 0.42); long shots cannot "
                               "be encoded in pieces with it")
        self.vae = vae
        self._cache = [None] * vae._cached_conv_counts["encoder"]
        self.frames = 0

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        video = video.to(device=param.device, dtype=param.dtype)
        out, i, total = [], 0, video.shape[2]
        while i < total:
            size = 1 if self.frames == 0 else FRAME_STEP
            piece = video[:, :, i:i + size]
            if piece.shape[2] < size:
                raise ValueError(f"VAE input: a piece of {total} frames after {self.frames} does "
                                 f"not split into 4-frame chunks (the first piece is 1 + 4k "
                                 "frames, later ones 4k)")
            hidden = self.vae.encoder(piece, feat_cache=self._cache, feat_idx=[0])
            out.append(self.vae.quant_conv(hidden)[:, : self.vae.config.z_dim].float())
            i, self.frames = i + size, self.frames + size
        return torch.cat(out, dim=2)


class CausalDecoder:
    """Decode latent frames in order through the VAE's causal cache, one latent frame at a time
    (1 video frame for the first, 4 for each later one), with a cache of its own: several
    decoders (edit, alpha, composite) can advance side by side over one VAE.

    `decode(raw)`: the VAE's own latent frames `[1, 16, k, h, w]` -> `[1, 3, frames, 8h, 8w]` in
    [-1, 1], float32 on `out_device`."""

    def __init__(self, vae, out_device="cpu"):
        if not _has_causal_loops(vae):
            raise RuntimeError("this diffusers version's AutoencoderKLWan has no causal decode "
                               "loop Vera can drive (tested: 0.35 to 0.42)")
        self.vae, self.out_device = vae, out_device
        self._cache = [None] * vae._cached_conv_counts["decoder"]
        self.latent_frames = 0

    @torch.no_grad()
    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        x = self.vae.post_quant_conv(raw.to(device=param.device, dtype=param.dtype))
        out = []
        for i in range(x.shape[2]):
            frames = self.vae.decoder(x[:, :, i:i + 1], feat_cache=self._cache, feat_idx=[0],
                                      first_chunk=self.latent_frames == 0)
            out.append(frames.clamp(-1, 1).float().to(self.out_device))
            self.latent_frames += 1
        return torch.cat(out, dim=2)


@torch.no_grad()
def encode_raw(vae, video: torch.Tensor) -> torch.Tensor:
    """RGB video `[B, 3, T, H, W]` in [-1, 1] -> the VAE's own latent `[B, 16, T', H/8, W/8]`
    (float32, not normalised; what ComfyUI's VAE.encode returns). Uses the posterior mean, as
    Wan's v2v pipelines do; through `CausalEncoder` (equal to diffusers' `encode`, tested), so a
    clip encoded whole and one encoded in pieces give the same latents."""
    _, _, frames, height, width = video.shape
    if (frames - 1) % FRAME_STEP or height % 8 or width % 8:
        raise ValueError(
            f"VAE input of {frames} frames at {width}x{height}: the Wan VAE needs 1 + 4k frames "
            "and sizes that are multiples of 8 (it silently drops extra frames otherwise); pad or "
            "trim first"
        )
    if _has_causal_loops(vae):
        return CausalEncoder(vae).encode(video)
    param = next(vae.parameters())
    return vae.encode(video.to(device=param.device, dtype=param.dtype)).latent_dist.mode().float()


def normalise(vae, mu: torch.Tensor) -> torch.Tensor:
    """The VAE's own latent -> `(mu - latents_mean) / latents_std`."""
    mean, std = latent_stats(vae, mu)
    return (mu - mean) / std


def denormalise(vae, latent: torch.Tensor) -> torch.Tensor:
    """Normalised latent -> the VAE's own."""
    mean, std = latent_stats(vae, latent)
    return latent.float() * std + mean


def encode(vae, video: torch.Tensor) -> torch.Tensor:
    """RGB video `[B, 3, T, H, W]` in [-1, 1] -> normalised latent
    `(mu - latents_mean) / latents_std`."""
    return normalise(vae, encode_raw(vae, video))


@torch.no_grad()
def decode_raw(vae, z: torch.Tensor, chunk_callback: Callable[[int, int], None] | None = None,
               out_device="cpu") -> torch.Tensor:
    """The VAE's own latent `[B, 16, T', h, w]` -> video `[B, 3, 1 + 4(T'-1), 8h, 8w]` in [-1, 1],
    float32 on `out_device`.

    Decodes one latent frame at a time through the VAE's causal cache (`CausalDecoder`, as
    diffusers does inside `decode`), moving each decoded chunk off the device at once so device
    memory stays bounded by one chunk; `chunk_callback(done, total)` reports progress. Equal to
    `vae.decode` (tested).
    """
    if not _has_causal_loops(vae):
        param = next(vae.parameters())
        z = z.to(device=param.device, dtype=param.dtype)
        return vae.decode(z).sample.float().clamp(-1, 1).to(out_device)
    decoder, chunks, total = CausalDecoder(vae, out_device), [], z.shape[2]
    for i in range(total):
        chunks.append(decoder.decode(z[:, :, i:i + 1]))
        if chunk_callback is not None:
            chunk_callback(i + 1, total)
    return torch.cat(chunks, dim=2)


def decode(vae, latent: torch.Tensor, chunk_callback: Callable[[int, int], None] | None = None,
           out_device="cpu") -> torch.Tensor:
    """Normalised latent `[B, 16, T', h, w]` -> video in [-1, 1] (see `decode_raw`)."""
    return decode_raw(vae, denormalise(vae, latent), chunk_callback, out_device)


class FrameCodec(Protocol):
    """What the pipeline needs from a VAE, on frames as ComfyUI's IMAGE holds them.

    encode_frames: `[T, H, W, 3]` float in [0, 1] -> normalised latent `[1, 16, T', H/8, W/8]`
    (float32, CPU). decode_frames: the inverse, `[T, H, W, 3]` float32 in [0, 1] on the CPU.
    `WanCodec` implements it over a diffusers AutoencoderKLWan; `nodes/vae_bridge.py` over
    ComfyUI's VAE.
    """

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor: ...

    def decode_frames(self, latent: torch.Tensor) -> torch.Tensor: ...


class WanCodec:
    """`FrameCodec` over a diffusers AutoencoderKLWan; the only codec that converts layouts."""

    def __init__(self, vae):
        self.vae = vae

    def encode_raw_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """`[T, H, W, 3]` in [0, 1] -> the VAE's own (not normalised) latent `[1, 16, T', h, w]`."""
        return encode_raw(self.vae, frames_to_video(frames[..., :3])).cpu()

    def decode_raw_frames(self, raw: torch.Tensor) -> torch.Tensor:
        """Own latent `[1, 16, T', h, w]` -> `[T, H, W, 3]` in [0, 1]."""
        return video_to_frames(decode_raw(self.vae, raw.float()))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return encode(self.vae, frames_to_video(frames[..., :3])).cpu()

    def decode_frames(self, latent: torch.Tensor) -> torch.Tensor:
        return video_to_frames(decode(self.vae, latent))


def as_codec(vae) -> FrameCodec:
    """A FrameCodec as it is, or a diffusers AutoencoderKLWan wrapped in `WanCodec`."""
    return vae if hasattr(vae, "encode_frames") else WanCodec(vae)


def encode_matte(codec, matte: torch.Tensor) -> torch.Tensor:
    """Alpha or mask `[T, H, W, 1]` in [0, 1] -> latent of the same matte as a grey RGB video."""
    return as_codec(codec).encode_frames(matte.expand(*matte.shape[:3], 3))


def decode_matte(codec, latent: torch.Tensor) -> torch.Tensor:
    """Latent of a grey matte -> `[T, H, W, 1]` in [0, 1] (mean of the three decoded channels)."""
    return as_codec(codec).decode_frames(latent).mean(dim=-1, keepdim=True).clamp(0, 1)

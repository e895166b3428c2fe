"""The edit path: Vera Encode -> Vera Sampler -> Vera Decode Layers.

ComfyUI types: IMAGE `[T, H, W, 3]` float 0..1 (a video is a batch of frames); MASK `[T, H, W]`;
CONDITIONING `[[tensor [1, L, text_dim], dict]]`. Our sockets: VERA_MODEL, VERA_SOURCE, VERA_LAYERS.
"""
from __future__ import annotations

import logging

import torch

from ..vera.edit.pipeline import decode_layers, encode_source
from ..vera.frames import layers
from ..vera.frames.geometry import FRAME_POLICIES
from ..vera.media.clip import MAX_FRAME_COUNT, MAX_FRAMES, FrameSelection, read_clip, select_clip
from ..vera.media.video import DEFAULT_RATE
from ..vera.model import lora
from ..vera.sampling.plan import latent_activation_bytes
from ..vera.sampling.preview import preview_frames
from ..vera.sampling.sampler import Interrupted, sample
from ..vera.sampling.settings import (
    BATCH_CFG,
    CFG_RANGE,
    MAX_SEED,
    MAX_STEPS,
    SAMPLERS,
    SHIFT_RANGE,
    WAN_DEFAULTS,
    SamplingSettings,
    check_value,
)
from ..vera.sampling.windows import describe, source_spans, windows_for
from . import host
from .handles import (
    VERA_CACHE,
    VERA_LAYERS,
    VERA_MODEL,
    VERA_SHOT,
    VERA_SOURCE,
    VERA_WINDOWS,
    VeraLayers,
    VeraShot,
)
from .previews import layer_previews
from .vae_bridge import ComfyVAECodec
from .window_nodes import model_windows

log = logging.getLogger(__name__)
CATEGORY = "Vera/sampling"


class VeraEncode:
    DESCRIPTION = ("Encode the source video (and, for background changes, a coarse mask) with the VAE into what "
                   "the Vera Sampler conditions on. Connect a VIDEO (Load Video: only the frames "
                   "used are decoded, and its frame rate and sound travel to the saved files) or a "
                   "batch of frames. Vera needs 1 + 4k frames and sizes that are multiples of 16: "
                   "frame_policy says whether to stop with an error, pad, or crop.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (VERA_SOURCE,)
    RETURN_NAMES = ("vera_source",)
    OUTPUT_TOOLTIPS = ("The encoded source (and mask), with its frame rate, sound and how to map "
                       "the layers back to the video.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "ComfyUI's Wan2.1 VAE (VAELoader, wan_2.1_vae.safetensors), or "
                                           "Vera Bundled VAE for vera-tiny."}),
                "frame_policy": (list(FRAME_POLICIES), {"default": "error", "tooltip": (
                    "When the frames are not 1 + 4k or the size not a multiple of 16. error: stop "
                    "and say how to fix it. pad: repeat the last frame / edge pixels, then cut the "
                    "outputs back. crop: drop trailing frames and centre-crop (outputs are the "
                    "cropped video).")}),
                "work_width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16, "tooltip": (
                    "Run the model at this width (multiple of 16); 0 = auto: about 832x480 pixels "
                    "with the video's aspect ratio (never larger than the video). The layers are "
                    "scaled back, and the final composite is made over the full-size source.")}),
                "work_height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16, "tooltip": (
                    "Run the model at this height (multiple of 16); 0 = auto (see work_width).")}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 10 ** 7, "tooltip": (
                    "First frame of the video to edit (0 = its first).")}),
                "frame_count": ("INT", {"default": 49, "min": 1, "max": MAX_FRAME_COUNT,
                                        "tooltip": (
                    "How many frames to edit (fewer when the video ends first), 1 + 4k. A shot "
                    "longer than the model's context window (81 frames for Wan-based Vera, 17 "
                    "for vera-tiny) is sampled in overlapping windows (Vera Context Windows); "
                    f"with windows off, at most {MAX_FRAMES}. The frames are held in memory.")}),
                "frame_stride": ("INT", {"default": 1, "min": 1, "max": 100, "tooltip": (
                    "Use every n-th frame (2 halves the frame rate and covers twice the time).")}),
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": (
                    "The source video (Load Video). Its exact frame rate (e.g. 24000/1001) and "
                    "sound go to the composite VIDEO and Vera Save Layers.")}),
                "frames": ("IMAGE", {"tooltip": (
                    "Or: the source as a batch of frames (e.g. from Load Image or another node); "
                    "its rate is fps below. Connect video or frames, not both.")}),
                "fps": ("FLOAT", {"default": float(DEFAULT_RATE), "min": 0.01, "max": 1000.0,
                                  "step": 0.001,
                                  "tooltip": (
                    "Frame rate of the frames input (23.976 is read as 24000/1001). A VIDEO brings "
                    "its own.")}),
                "edit_region": ("MASK", {"tooltip": (
                    "Optional coarse mask, 1 = region the edit may change (background change: the "
                    "background). One frame (used for all) or one per edited frame; any size with "
                    "the video's aspect ratio (resized: nearest for hard masks). Leave unconnected "
                    "for object addition.")}),
            },
        }

    def encode(self, vae, frame_policy="error", work_width=0, work_height=0, start_frame=0,
               frame_count=49, frame_stride=1, video=None, frames=None, fps=float(DEFAULT_RATE),
               edit_region=None):
        if (video is None) == (frames is None):
            which = "not both" if video is not None else "one of them"
            raise ValueError("Vera Encode: connect the source to video (a VIDEO, e.g. Load Video) "
                             f"or to frames (an IMAGE batch), {which}")
        if (work_width == 0) != (work_height == 0):
            raise ValueError(f"work_width {work_width} / work_height {work_height}: set both (multiples of 16) "
                             "or leave both at 0 for auto")
        pick = FrameSelection(start_frame, frame_count, frame_stride)
        if video is not None:
            source_frames, clip = source_from_video(video, pick)
        else:
            source_frames, clip = select_clip(frames[..., :3], pick, fps, name="frames")
        work_size = (work_height, work_width) if work_width else "auto"
        names = ("video" if video is not None else "frames", "edit_region")
        encoded = encode_source(ComfyVAECodec(vae), source_frames, edit_region, frame_policy,
                                work_size, names=names, clip=clip)
        return (encoded,)


def source_from_video(video, pick: FrameSelection):
    """A VIDEO -> (the selected frames, their SourceClip). From a file only those frames are
    decoded (uint8); a VIDEO made of frames is sliced."""
    stream = host.video_file(video)
    if stream is not None:
        return read_clip(stream, pick, "video")
    parts = video.get_components()
    return select_clip(parts.images[..., :3], pick, parts.frame_rate, parts.audio, "video")


def conditioning_context(conditioning, name: str, text_dim: int) -> torch.Tensor:
    """CONDITIONING -> `[1, L, text_dim]` float32, as the encoder gave it (ComfyUI's Wan encoder: L >= 512, zeros
    past the prompt, as Wan2.1 was trained)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{name}: expected CONDITIONING (a list of [tensor, dict]); connect a text encode node")
    if len(conditioning) > 1:
        raise ValueError(f"{name}: {len(conditioning)} conditionings were combined; Vera takes one prompt per input")
    context = conditioning[0][0]
    if context.ndim != 3 or context.shape[0] != 1:
        raise ValueError(f"{name}: text embeddings must be [1, tokens, dim], got {tuple(context.shape)}")
    if context.shape[-1] != text_dim:
        hint = ("Vera Text Encode (bundled)" if text_dim != 4096 else
                "CLIPTextEncode with CLIPLoader (umt5_xxl_*.safetensors, type wan)")
        raise ValueError(f"{name}: text embeddings are {context.shape[-1]}-wide but this model expects {text_dim}; "
                         f"encode the prompt with {hint}")
    return context.float().cpu()


class VeraSampler:
    DESCRIPTION = ("Generate the edit layer, alpha matte and composite jointly (three-branch flow matching with "
                   "classifier-free guidance). A shot longer than the model's context window is "
                   "sampled in overlapping windows (see Vera Context Windows). Shows progress; "
                   "Cancel stops it before the next step.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = (VERA_LAYERS,)
    RETURN_NAMES = ("vera_layers",)
    OUTPUT_TOOLTIPS = ("The three layer latents (edit, alpha, composite), for Vera Decode Layers.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vera_model": (VERA_MODEL, {"tooltip": "From Load Vera Model."}),
                "positive": ("CONDITIONING", {"tooltip": "The edit instruction (CLIPTextEncode with the Wan "
                                                         "text encoder, or Vera Text Encode for vera-tiny)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt, used when cfg is above 1."}),
                "vera_source": (VERA_SOURCE, {"tooltip": "From Vera Encode."}),
                "seed": ("INT", {
                    "default": WAN_DEFAULTS.seed, "min": 0, "max": MAX_SEED,
                    "control_after_generate": True,
                    "tooltip": "Noise seed; the same seed gives the same result on any device."}),
                "steps": ("INT", {
                    "default": WAN_DEFAULTS.steps, "min": 1, "max": MAX_STEPS,
                    "tooltip": "Denoising steps (Wan2.1's default; a bundled model such as "
                               "vera-tiny records its own in its workflow)."}),
                "cfg": ("FLOAT", {
                    "default": WAN_DEFAULTS.cfg, "min": CFG_RANGE[0], "max": CFG_RANGE[1],
                    "step": 0.1,
                    "tooltip": "Guidance scale; 1 disables guidance and the negative prompt."}),
                "shift": ("FLOAT", {
                    "default": WAN_DEFAULTS.shift, "min": 0.1, "max": SHIFT_RANGE[1], "step": 0.1,
                    "tooltip": "Flow-matching schedule shift: higher spends more steps at high "
                               "noise (Wan uses 3 to 5)."}),
                "sampler": (list(SAMPLERS), {
                    "default": WAN_DEFAULTS.sampler,
                    "tooltip": "unipc: Wan's multistep solver (fewer steps). euler: first-order "
                               "flow-matching Euler. lcm: few steps (e.g. 4) for step-distilled "
                               "weights or LoRAs, at cfg 1."}),
            },
            "optional": {
                "batch_cfg": (list(BATCH_CFG), {
                    "default": WAN_DEFAULTS.batch_cfg,
                    "tooltip": "Run the positive and negative passes as one batch of two (faster) "
                               "or one after the other (half the activations). auto: batched when "
                               "it fits in free memory."}),
                "cache": (VERA_CACHE, {
                    "tooltip": "From Vera Cache: skip model evaluations while the latents barely "
                               "change (faster, slightly different). Unconnected: every step runs "
                               "the model."}),
                "context_windows": (VERA_WINDOWS, {
                    "tooltip": "From Vera Context Windows: how a shot longer than one window is "
                               "split and blended. Unconnected: the model's own windows "
                               "(vera-tiny: 17 frames, 8 shared; Wan-based Vera: 81, 24 shared)."}),
            },
        }

    def sample(self, vera_model, positive, negative, vera_source, seed, steps, cfg, shift, sampler,
               batch_cfg="auto", cache=None, context_windows=None):
        settings = SamplingSettings(steps=steps, cfg=cfg, shift=shift, seed=seed, sampler=sampler,
                                    batch_cfg=batch_cfg, **(cache or {}))
        settings = settings.updated(**(context_windows or model_windows(vera_model)))
        frames = vera_source.source_u8.shape[0]
        if settings.window == 0 and frames > MAX_FRAMES:
            raise ValueError(
                f"vera_source has {frames} frames but context_windows is off (window 0): without "
                f"windows Vera samples at most {MAX_FRAMES} frames at a time. Set Vera Context "
                f"Windows' mode to windows, or lower Vera Encode's frame_count to {MAX_FRAMES} or "
                "less")
        model = vera_model.model
        text_dim = model.config.text_dim
        context = conditioning_context(positive, "positive", text_dim)
        neg = conditioning_context(negative, "negative", text_dim) if settings.guided else None
        source = vera_source.source_latent
        windows = windows_for(settings, source.shape[2])
        spans = source_spans(windows, frames)
        if len(spans) > 1:
            log.info("Vera Sampler: %s", describe(spans))
        # windows share one length and run one after another: the memory asked for is one's
        one_window = source[:, :, : windows[0][1]]
        passes = 2 if settings.batch_cfg != "off" and settings.guided else 1
        need = latent_activation_bytes(model, one_window, passes)
        # auto may fall back to one pass at a time, so it needs only that much at the least
        least = (latent_activation_bytes(model, one_window, 1) if settings.batch_cfg == "auto"
                 else need)
        host.load_for_use(vera_model.manager, need, least)
        managed = vera_model.manager is not None
        device = host.device() if managed else next(model.parameters()).device
        progress = host.Progress(steps)
        previews = step_previews(vera_model) if progress.wants_previews else None
        mask = vera_source.mask_latent
        to = lambda t: None if t is None else t.to(device)
        evaluations = {}
        # LoRAs kept beside the model (outside ComfyUI) run for this sampling only
        attached = lora.attach(model, vera_model.lora_patches, device)
        try:
            latents = sample(model, to(context), to(source), to(mask), to(neg), settings,
                             callback=lambda info: progress.update(
                                 info.step, previews(info) if previews else None),
                             should_stop=host.interrupt_requested,
                             free_memory=host.free_bytes if managed else None,
                             evaluations=evaluations)
        except Interrupted:
            host.raise_interrupt()
        finally:
            attached.remove()
        model_name = getattr(model, "source_name", None) or vera_model.name
        return (VeraLayers({k: v.float().cpu() for k, v in latents.items()}, vera_source, settings,
                           model_name, evaluations, tuple(vera_model.loras), spans),)


def step_previews(bundle):
    """A function of a sampling step -> uint8 preview image (composite | edit layer over a
    checkerboard), with the bundle's own latent-to-RGB map or ComfyUI's Wan2.1 one."""
    latent_rgb = bundle.latent_rgb or host.wan21_latent_rgb()
    if latent_rgb is None:
        return None
    return lambda info: preview_frames(info.denoised, *latent_rgb)


class VeraDecodeLayers:
    DESCRIPTION = ("Decode the three layers with the VAE, at the source video's size and frame count. Composite "
                   "them over the source with Vera Composite; untouched pixels then stay bit-identical.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "IMAGE", "IMAGE", "MASK", VERA_SHOT)
    RETURN_NAMES = ("edit_layer", "alpha (1 = opaque)", "model_composite", "source", "edit_rgba",
                    "mask (1 = transparent)", "vera_shot")
    OUTPUT_TOOLTIPS = (
        "The edit layer (RGB); meaningful where alpha > 0.",
        "The matte: 1 = edit layer opaque, 0 = source shows through. Quantised to 8 bits. "
        "ImageCompositeMasked (destination = source, source = edit layer) takes it as its mask; "
        "JoinImageWithAlpha takes the mask output instead.",
        "The composite branch's own output (for eq. 3 recovery and checks; not bit-exact outside the edit).",
        "The source frames these layers line up with (cropped if frame_policy was crop).",
        "The edit layer with its matte as a 4-channel IMAGE (straight alpha): Save Image writes "
        "RGBA PNGs, video writers of other packs take it directly.",
        "The matte in ComfyUI's MASK convention, 1 - alpha (1 = transparent, as Load Image gives): "
        "what JoinImageWithAlpha expects.",
        "The shot's frame rate, sound and settings, for Vera Composite's VIDEO and Vera Save "
        "Layers.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The same VAE that encoded the source."}),
                "vera_layers": (VERA_LAYERS, {"tooltip": "From Vera Sampler."}),
                "alpha_cutoff": ("FLOAT", {
                    "default": WAN_DEFAULTS.alpha_cutoff, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Matte values below this become 0 (source untouched there); "
                               "removes faint haze from decoding. A bundled model such as "
                               "vera-tiny records its own in its workflow."}),
            }
        }

    def decode(self, vae, vera_layers, alpha_cutoff=0.0):
        alpha_cutoff = check_value("alpha_cutoff", alpha_cutoff)
        encoded = vera_layers.source
        edit_rgb, alpha, model_comp = decode_layers(ComfyVAECodec(vae), vera_layers.latents, encoded)
        alpha = layers.quantize_alpha(alpha, alpha_cutoff)
        edit_rgb = layers.on_8bit_grid(edit_rgb)
        source = encoded.source_u8.float() / 255
        preview_final = layers.final_composite(source, edit_rgb, alpha)  # what Vera Composite gives
        ui = {"vera_layers": [layer_previews(source, edit_rgb, alpha, preview_final)]}
        settings = vera_layers.settings
        shot = VeraShot(encoded.clip, settings and settings.updated(alpha_cutoff=alpha_cutoff),
                        vera_layers.model_name, vera_layers.evaluations, vera_layers.loras,
                        vera_layers.windows)
        rgba = torch.cat([edit_rgb, alpha], dim=-1)
        return {"ui": ui, "result": (edit_rgb, alpha[..., 0], model_comp, source, rgba,
                                     1 - alpha[..., 0], shot)}


NODES = {
    "VeraEncode": ("Vera Encode", VeraEncode),
    "VeraSampler": ("Vera Sampler", VeraSampler),
    "VeraDecodeLayers": ("Vera Decode Layers", VeraDecodeLayers),
}

"""The Vera Mixture-of-Transformers: three Wan2.1 T2V DiT branches with joint self-attention.

Module names inside a branch follow Wan2.1's original checkpoint names (`blocks.N.self_attn.q`,
`blocks.N.norm3`, `head.modulation`, ...), so a Wan/ComfyUI file loads into a branch by name.

Token flow of one forward, for latents `[B, C, T, H, W]` and `L = T/pt * H/ph * W/pw` tokens:
    edit, alpha, composite latents --patch embedding (per branch)--> three `[B, L, D]` streams
    + source tokens on composite, + mask tokens on alpha, + layer embeddings (alpha, composite)
    for each layer: per-branch modulation/norm/QKV -> ONE joint attention over 3 streams ->
                    per-branch output projection, cross-attention to text, FFN
    per-branch head -> three velocities `[B, C, T, H, W]`
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from .attention import attention, check_backend, joint_attention
from .config import BRANCHES, VeraConfig
from .fp8 import FP8Linear


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose weights follow the input's dtype and device (as ComfyUI's ops do), so
    `float32_norm` can run it in float32 over bf16 weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        to = lambda p: None if p is None else p.to(device=x.device, dtype=x.dtype)
        return F.layer_norm(x, self.normalized_shape, to(self.weight), to(self.bias), self.eps)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm whose weight follows the input's dtype and device (see LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(device=x.device, dtype=x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


class TorchOps:
    """The layers the model is built from. ComfyUI passes its own (`comfy.ops`: weights cast to the
    input's device and dtype per forward, so weights that do not fit stay on the CPU); outside it
    these are plain torch. FP8Linear replaces the block Linears under the fp8 policy."""

    Linear = nn.Linear
    Conv3d = nn.Conv3d
    LayerNorm = LayerNorm
    RMSNorm = RMSNorm
    FP8Linear = FP8Linear


def float32_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A norm computed in float32 whatever the weights' dtype (as Wan2.1 does), in x's dtype out."""
    return norm(x.float()).type_as(x)


def on(param: torch.Tensor, like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A parameter outside any layer (modulation, layer embeddings) on `like`'s device: under
    partial loading or block swap it may have stayed on the offload device."""
    return param.to(device=like.device, dtype=dtype)


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep embedding, cos half first. timesteps `[B]` -> `[B, dim]` float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_frequencies(config: VeraConfig, grid: tuple[int, int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin for a `(frames, height, width)` token grid -> two `[L, head_dim/2]` float32 tensors.

    The head dim is split into time / height / width parts as in Wan2.1 (d - 4*(d//6), 2*(d//6), 2*(d//6)).
    """
    d = config.head_dim
    parts = (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))
    angles = []
    for axis, (size, part) in enumerate(zip(grid, parts)):
        inv = 1.0 / config.rope_theta ** (torch.arange(0, part, 2, dtype=torch.float64, device=device) / part)
        axis_angles = torch.outer(torch.arange(size, dtype=torch.float64, device=device), inv)
        shape = [1, 1, 1, part // 2]
        shape[axis] = size
        angles.append(axis_angles.view(shape).expand(*grid, part // 2))
    theta = torch.cat(angles, dim=-1).reshape(-1, d // 2)
    return theta.cos().float(), theta.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs. x `[B, L, H, D]`, cos/sin `[L, D/2]` -> `[B, L, H, D]`."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


class AttentionProjections(nn.Module):
    """Wan's attention weights: q, k, v, o and RMS norms on q and k (across all heads)."""

    def __init__(self, dim: int, num_heads: int, eps: float, ops=TorchOps):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (ops.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = ops.RMSNorm(dim, eps=eps), ops.RMSNorm(dim, eps=eps)

    def heads(self, x: torch.Tensor, source: torch.Tensor):
        """Queries from x `[B, L, D]`, keys/values from source `[B, S, D]` -> `[B, L|S, H, D/H]`."""
        split = lambda t: t.unflatten(-1, (self.num_heads, -1))
        q = float32_norm(self.norm_q, self.q(x))
        k = float32_norm(self.norm_k, self.k(source))
        return split(q), split(k), split(self.v(source))


class SelfAttention(AttentionProjections):
    """One branch's self-attention weights; the attention itself is joint (see VeraModel)."""

    def qkv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        """x `[B, L, D]` -> q, k, v `[B, L, H, D/H]`, RoPE applied to q and k."""
        q, k, v = self.heads(x, x)
        return apply_rope(q, *rope), apply_rope(k, *rope), v


class CrossAttention(AttentionProjections):
    def forward(self, x: torch.Tensor, context: torch.Tensor, backend) -> torch.Tensor:
        """x `[B, L, D]`, context `[B, Lt, D]` -> `[B, L, D]`."""
        return self.o(attention(*self.heads(x, context), backend).flatten(-2))


class BranchBlock(nn.Module):
    """One Wan2.1 transformer block, split around its self-attention so three can attend jointly."""

    def __init__(self, config: VeraConfig, ops=TorchOps):
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = ops.LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, eps, ops)
        self.norm3 = ops.LayerNorm(dim, eps) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, config.num_heads, eps, ops)
        self.norm2 = ops.LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(ops.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 ops.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def before_attention(self, x: torch.Tensor, e0: torch.Tensor, rope):
        """x `[B, L, D]`, e0 `[B, 6, D]` -> (q, k, v) `[B, L, H, Dh]` and the six modulation
        vectors."""
        mod = (on(self.modulation, e0) + e0.float()).unbind(1)
        shift, scale = mod[0].unsqueeze(1), mod[1].unsqueeze(1)
        h = (float32_norm(self.norm1, x).float() * (1 + scale) + shift).type_as(x)
        return self.self_attn.qkv(h, rope), mod

    def after_attention(self, x, attn: torch.Tensor, mod, context: torch.Tensor,
                        backend) -> torch.Tensor:
        """x `[B, L, D]`, attn `[B, L, H, Dh]` (joint attention output), context `[B, Lt, D]` ->
        `[B, L, D]`."""
        gate, c_shift, c_scale, c_gate = (m.unsqueeze(1) for m in mod[2:])
        x = (x.float() + self.self_attn.o(attn.flatten(-2)).float() * gate).type_as(x)
        normed = x if isinstance(self.norm3, nn.Identity) else float32_norm(self.norm3, x)
        x = x + self.cross_attn(normed, context, backend)
        h = (float32_norm(self.norm2, x).float() * (1 + c_scale) + c_shift).type_as(x)
        return (x.float() + self.ffn(h).float() * c_gate).type_as(x)


def _before_attention(block: BranchBlock, *args):
    return block.before_attention(*args)  # through the instance: FSDP2 wraps its methods there


def _after_attention(block: BranchBlock, *args):
    return block.after_attention(*args)


EAGER_BLOCK_FUNCTIONS = (_before_attention, _after_attention)


class Head(nn.Module):
    def __init__(self, config: VeraConfig, ops=TorchOps):
        super().__init__()
        self.norm = ops.LayerNorm(config.dim, config.eps, elementwise_affine=False)
        self.head = ops.Linear(config.dim, config.out_channels * math.prod(config.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x `[B, L, D]`, e `[B, D]` -> `[B, L, C*pt*ph*pw]`."""
        shift, scale = (on(self.modulation, e) + e.float().unsqueeze(1)).unbind(1)
        normed = float32_norm(self.norm, x).float()
        return self.head((normed * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)).type_as(x))


class WanBranch(nn.Module):
    """The weights of one Wan2.1 T2V DiT. Its state dict uses Wan's original key names."""

    def __init__(self, config: VeraConfig, ops=TorchOps):
        super().__init__()
        dim = config.dim
        self.config = config
        self.patch_embedding = ops.Conv3d(config.in_channels, dim, config.patch_size,
                                          config.patch_size)
        self.text_embedding = nn.Sequential(ops.Linear(config.text_dim, dim),
                                            nn.GELU(approximate="tanh"), ops.Linear(dim, dim))
        self.time_embedding = nn.Sequential(ops.Linear(config.freq_dim, dim), nn.SiLU(),
                                            ops.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(BranchBlock(config, ops) for _ in range(config.num_layers))
        self.head = Head(config, ops)

    def embed_tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """`[B, C, T, H, W]` -> `[B, L, D]`."""
        weight = self.patch_embedding.weight
        return self.patch_embedding(latent.to(weight.dtype)).flatten(2).transpose(1, 2)

    def embed_time(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep `[B]` -> e `[B, D]` (head modulation) and e0 `[B, 6, D]` (block modulation),
        float32."""
        dtype = self.time_embedding[0].weight.dtype
        sinusoid = sinusoidal_embedding(timestep, self.config.freq_dim).to(dtype)
        e = self.time_embedding(sinusoid).float()
        e0 = self.time_projection(e.to(dtype)).float().unflatten(1, (6, -1))
        return e, e0

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """`[B, Lt, text_dim]` -> `[B, Lt, D]`."""
        return self.text_embedding(context.to(self.text_embedding[0].weight.dtype))


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """`[B, L, C*pt*ph*pw]` -> `[B, C, T, H, W]` (patch axes innermost, channels last, as Wan's head)."""
    f, h, w = grid
    x = tokens.reshape(tokens.shape[0], f, h, w, *patch, -1)
    return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)


@dataclass
class Prepared:
    """The streams of a forward before its layers (see `VeraModel.embed`), by branch name: tokens
    `[B, L_i, D]`, RoPE cos/sin `[L_i, Dh/2]`, time (e `[B, D]`, e0 `[B, 6, D]`) and text
    `[B, Lt, D]`; the token grid and tokens per stream (before appended condition tokens)."""

    streams: dict[str, torch.Tensor]
    ropes: dict[str, tuple[torch.Tensor, torch.Tensor]]
    time: dict[str, tuple[torch.Tensor, torch.Tensor]]
    text: dict[str, torch.Tensor]
    grid: tuple[int, int, int]
    tokens: int


class VeraModel(nn.Module):
    """Three Wan branches (edit, alpha, composite) plus Vera's conditioning embeddings.

    Extra parameters beside the branches (all zero-initialised so a fresh model from Wan weights
    starts as three copies of Wan):
      source_embedding  Conv3d patch embedding of the source-video latent (added to composite tokens)
      mask_embedding    Conv3d patch embedding of the mask latent (added to alpha tokens)
      layer_embedding_alpha / layer_embedding_composite   `[1, 1, D]` learned layer embeddings
    """

    def __init__(self, config: VeraConfig, operations=TorchOps):
        super().__init__()
        self.config = config
        self.operations = operations
        self.branches = nn.ModuleDict({name: WanBranch(config, operations) for name in BRANCHES})
        conv = lambda: operations.Conv3d(config.in_channels, config.dim, config.patch_size,
                                         config.patch_size)
        self.source_embedding, self.mask_embedding = conv(), conv()
        self.layer_embedding_alpha = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.layer_embedding_composite = nn.Parameter(torch.zeros(1, 1, config.dim))
        self._attention_backend = "auto"
        self.gradient_checkpointing = False
        self.layer_hook = None  # e.g. blockswap.BlockSwap: told before and after each layer
        # (before, after) the joint attention, per branch block; compile.compile_blocks swaps in
        # compiled ones
        self.block_functions = EAGER_BLOCK_FUNCTIONS
        self.source_name: str | None = None  # "vera-tiny" or the file name (set by load_bundle)
        self.reset_conditioning()

    def reset_conditioning(self) -> None:
        """Zero the conditioning embeddings (the paper's initialisation for a model fresh from Wan)."""
        with torch.no_grad():
            for p in (*self.source_embedding.parameters(), *self.mask_embedding.parameters(),
                      self.layer_embedding_alpha, self.layer_embedding_composite):
                p.zero_()

    @property
    def attention_backend(self):
        """"auto" (xformers on CUDA when its kernels load, else SDPA), "xformers", "sdpa", "naive",
        or a function (q, k, v) `[B, L, H, D]` -> `[B, L, H, D]` (ComfyUI's own dispatch)."""
        return self._attention_backend

    @attention_backend.setter
    def attention_backend(self, backend) -> None:
        self._attention_backend = check_backend(backend)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.branches.values())).patch_embedding.weight.dtype

    def forward(
        self,
        edit: torch.Tensor,
        alpha: torch.Tensor,
        composite: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        source: torch.Tensor,
        mask: torch.Tensor | None = None,
        cross_branch_attention: bool = True,
        mask_keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict the three velocities.

        edit, alpha, composite, source, mask: latents `[B, C, T, H, W]` (mask optional).
        timestep: `[B]` (or a scalar) in Wan's 0..1000 scale. context: `[B, Lt, text_dim]`.
        cross_branch_attention=False lets each branch attend only to itself (three plain Wan models).
        mask_keep: optional `[B]` 0/1 weights on the mask tokens (training's per-sample mask dropout).
        Returns velocities (edit, alpha, composite), each `[B, C_out, T, H, W]` in float32.
        """
        prepared = self.embed(edit, alpha, composite, timestep, context, source, mask, mask_keep)
        streams = self.run_layers(BRANCHES, prepared, joint=cross_branch_attention)
        return tuple(self.velocities(BRANCHES, streams, prepared))

    def embed(self, edit, alpha, composite, timestep, context, source, mask=None, mask_keep=None,
              names: tuple[str, ...] = BRANCHES) -> "Prepared":
        """Check the latents (see `forward`) and embed the streams of the branches `names` (their
        tokens with the conditioning, RoPE, time and text embeddings); only those branches'
        weights are used."""
        cfg = self.config
        if not (edit.shape == alpha.shape == composite.shape == source.shape):
            raise ValueError(
                f"latent shapes differ: edit {tuple(edit.shape)}, alpha {tuple(alpha.shape)}, "
                f"composite {tuple(composite.shape)}, source {tuple(source.shape)}"
            )
        if mask is not None and mask.shape != source.shape:
            raise ValueError(f"mask latent {tuple(mask.shape)} does not match source latent {tuple(source.shape)}")
        batch, _, frames, height, width = edit.shape
        pt, ph, pw = cfg.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent size {(frames, height, width)} is not a multiple of the patch size {cfg.patch_size}")
        grid = (frames // pt, height // ph, width // pw)
        timestep = timestep.reshape(-1).expand(batch).to(edit.device)
        rope = rope_frequencies(cfg, grid, edit.device)
        tokens = grid[0] * grid[1] * grid[2]
        latents = {"edit": edit, "alpha": alpha, "composite": composite}
        streams = {}
        for name in names:
            x = self.branches[name].embed_tokens(latents[name])
            if name == "alpha":
                x = x + on(self.layer_embedding_alpha, x, x.dtype)
                extra = None if mask is None else self._embed_condition(self.mask_embedding, mask)
                if extra is not None and mask_keep is not None:
                    extra = extra * mask_keep.reshape(-1, 1, 1).to(extra.dtype)
            elif name == "composite":
                x = x + on(self.layer_embedding_composite, x, x.dtype)
                extra = self._embed_condition(self.source_embedding, source)
            else:
                extra = None
            if extra is not None:
                # Appended condition tokens (sequence conditioning) share RoPE positions with the
                # layer tokens; they carry no layer embedding, which is what lets the model tell
                # them apart once the embeddings are trained.
                x = x + extra if cfg.conditioning == "add" else torch.cat([x, extra], dim=1)
            streams[name] = x
        ropes = {n: tuple(r.repeat(x.shape[1] // tokens, 1) for r in rope)
                 for n, x in streams.items()}
        time = {n: self.branches[n].embed_time(timestep) for n in names}
        text = {n: self.branches[n].embed_text(context) for n in names}
        return Prepared(streams, ropes, time, text, grid, tokens)

    def run_layers(self, names: tuple[str, ...], prepared: "Prepared", joint: bool = True,
                   attend=None) -> list[torch.Tensor]:
        """Every layer over the streams of `names` -> their tokens `[B, L_i, D]`. attend(qkv
        list) -> attention outputs: by default the joint attention over these streams (parallel
        runs pass one that also sees the other processes' tokens)."""
        streams = [prepared.streams[n] for n in names]
        args = ([prepared.time[n][1] for n in names], [prepared.text[n] for n in names],
                [prepared.ropes[n] for n in names], joint, attend)
        hook = self.layer_hook
        for layer in range(self.config.num_layers):
            if hook is not None:
                hook.before(layer)
            blocks = [self.branches[n].blocks[layer] for n in names]
            if self.gradient_checkpointing and torch.is_grad_enabled():
                streams = torch.utils.checkpoint.checkpoint(self._layer, streams, blocks, *args,
                                                            use_reentrant=False)
            else:
                streams = self._layer(streams, blocks, *args)
            if hook is not None:
                hook.after(layer)
        return streams

    def velocities(self, names: tuple[str, ...], streams: list[torch.Tensor],
                   prepared: "Prepared") -> list[torch.Tensor]:
        """Each branch's head over its layer tokens -> velocities `[B, C_out, T, H, W]`,
        float32."""
        outputs = []
        for name, x in zip(names, streams):
            branch, e = self.branches[name], prepared.time[name][0]
            outputs.append(unpatchify(branch.head(x[:, :prepared.tokens], e).float(),
                                      prepared.grid, self.config.patch_size))
        return outputs

    def _embed_condition(self, embedding: nn.Conv3d, latent: torch.Tensor) -> torch.Tensor:
        return embedding(latent.to(embedding.weight.dtype)).flatten(2).transpose(1, 2)

    def _layer(self, streams, blocks, e0s, texts, ropes, joint: bool, attend=None):
        before, after = self.block_functions
        prepared = [before(blk, x, e0, rope)
                    for blk, x, e0, rope in zip(blocks, streams, e0s, ropes)]
        qkv = [p[0] for p in prepared]
        attended = (joint_attention(qkv, self.attention_backend, joint=joint) if attend is None
                    else attend(qkv))
        return [
            after(blk, x, attn, mod, ctx, self.attention_backend)
            for blk, x, attn, (_, mod), ctx in zip(blocks, streams, attended, prepared, texts)
        ]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

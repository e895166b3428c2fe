"""The Vera trainer (HF accelerate: one CPU, one GPU or many GPUs with DDP/FSDP, same code).

Modes
  vera      the three-branch MoT: flow-matching loss on the edit, alpha and composite latents with
            equal weights; per-branch learning rates (paper: edit 0.1x, alpha 10x, composite 10x);
            mask dropout per task (paper: 0.9 object addition, 0.3 background change).
  t2v       one Wan DiT on the composite videos with their text (stage 1 of a self-made small
            model, standing in for a Wan2.1 checkpoint); can train the text encoder with it.
  baseline  one Wan DiT that regenerates the composite from the source (video-to-video), the
            single-branch comparison for the paper's central claim.

Flow matching convention (vera.sampling.sampler): x_s = (1 - s) x0 + s noise, target v = noise - x0,
timestep = 1000 s, s drawn uniformly then shifted with `train_shift`.
Batches and noise are functions of (seed, step), so a resumed run continues exactly as an
uninterrupted one would.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..model.config import BRANCHES
from ..sampling.sampler import shift_sigma

MODES = ("vera", "t2v", "baseline")
SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
GRADIENT_CHECKPOINTING = ("auto", "on", "off")
PAPER_BRANCH_LR_SCALE = {"edit": 0.1, "alpha": 10.0, "composite": 10.0}
PAPER_MASK_DROPOUT = {"object_addition": 0.9, "background_change": 0.3}


@dataclass
class TrainConfig:
    mode: str = "vera"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-5
    branch_lr_scale: dict = field(default_factory=lambda: dict(PAPER_BRANCH_LR_SCALE))
    text_lr: float = 1e-4
    warmup_steps: int = 200
    schedule: str = "constant"  # or "cosine" (decays to 10% at the last step)
    weight_decay: float = 0.01
    mask_dropout: dict = field(default_factory=lambda: dict(PAPER_MASK_DROPOUT))
    text_dropout: float = 0.1
    train_shift: float = 3.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, none on CPU
    gradient_checkpointing: str = "auto"  # auto: on for CUDA
    lora_rank: int = 0  # vera mode: > 0 trains LoRA adapters per branch on one frozen shared base
    fsdp: bool = False  # shard weights, gradients and optimizer state over the processes (FSDP2)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {MODES}")
        for name, allowed in (("schedule", SCHEDULES), ("mixed_precision", MIXED_PRECISION),
                              ("gradient_checkpointing", GRADIENT_CHECKPOINTING)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of "
                                 f"{', '.join(allowed)}")
        missing = set(BRANCHES) - set(self.branch_lr_scale)
        if self.mode == "vera" and missing:
            raise ValueError(f"branch_lr_scale needs a scale for every branch; missing {sorted(missing)}")


def lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
        if config.schedule == "cosine":
            return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(config.steps, 1), 1.0))))
        return warm
    return factor


def vera_param_groups(model, base_lr: float, scales: dict[str, float], weight_decay: float) -> list[dict]:
    """One optimizer group per branch; each conditioning embedding goes with the branch it feeds."""
    extra = {"edit": [], "alpha": [model.mask_embedding, model.layer_embedding_alpha],
             "composite": [model.source_embedding, model.layer_embedding_composite]}
    groups = []
    for name in BRANCHES:
        params = list(model.branches[name].parameters())
        for item in extra[name]:
            params += list(item.parameters()) if isinstance(item, torch.nn.Module) else [item]
        params = [p for p in params if p.requires_grad]
        groups.append(dict(params=params, lr=base_lr * scales[name], weight_decay=weight_decay, name=name))
    return groups


class Batches:
    """Deterministic batches over an in-memory latent cache: epoch permutations seeded by (seed, epoch),
    each process taking its own slice of every global batch."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if size < batch_size * world:
            raise ValueError(f"dataset of {size} samples is smaller than one global batch ({batch_size} x {world} processes)")
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.per_epoch = size // (batch_size * world)

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        start = (k * self.world + self.rank) * self.batch_size
        return perm[start: start + self.batch_size]


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


class Trainer:
    """Holds the accelerator, model, optimizer and data; `run()` trains to `config.steps`.

    model: a `VeraModel` (vera) or `WanVideoModel` (t2v, baseline). latents: `encode_dataset` output.
    text: a `TextEncoder`; trained only when `train_text` (its contexts are cached otherwise).
    """

    def __init__(self, config: TrainConfig, model, latents: dict, text, out: str | Path, train_text: bool = False):
        from accelerate import Accelerator

        cuda = torch.cuda.is_available()
        precision = config.mixed_precision if config.mixed_precision != "auto" else ("bf16" if cuda else "no")
        # the schedule is in optimizer steps, whatever the process count (accelerate would otherwise step
        # it once per process per step)
        self.accelerator = Accelerator(mixed_precision=precision, cpu=not cuda, step_scheduler_with_optimizer=False)
        self.config, self.out, self.text, self.train_text = config, Path(out), text, train_text
        self.out.mkdir(parents=True, exist_ok=True)
        self.latents = latents
        if config.gradient_checkpointing == "on" or (config.gradient_checkpointing == "auto" and cuda):
            model.gradient_checkpointing = True
        acc = self.accelerator
        # FSDP: accelerate's own (set up by `accelerate launch --use_fsdp` / its environment; it
        # runs on GPUs only), or ours (FSDP2 applied here, on CPUs too)
        self.sharded = acc.distributed_type.value == "FSDP"
        self.own_fsdp = config.fsdp and not self.sharded
        if self.own_fsdp:
            if config.mode != "vera" or acc.num_processes < 2:
                raise ValueError("--fsdp shards a Vera model (--mode vera) over several processes: "
                                 "launch with torchrun --nproc_per_node N (or accelerate launch)")
            _shard_for_training(model.to(acc.device), acc.device.type)
            self.sharded = True
        groups = self._param_groups(model)
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        modules = [] if self.own_fsdp else [model] + ([text.model] if train_text else [])
        prepared = acc.prepare(*modules, self.optimizer, self.scheduler)
        self.model = model if self.own_fsdp else prepared[0]
        if train_text and not self.own_fsdp:
            text.model = prepared[1]
        self.optimizer, self.scheduler = prepared[-2], prepared[-1]
        if self.sharded:
            _fsdp_block_methods(self.model)
        self.batches = Batches(len(latents["id"]), config.batch_size, config.seed, acc.process_index, acc.num_processes)
        self.step = 0
        self._contexts = None if train_text else self._encode_all_prompts()

    # -- setup -------------------------------------------------------------------------------------
    def _param_groups(self, model) -> list[dict]:
        cfg = self.config
        if cfg.mode == "vera":
            groups = vera_param_groups(model, cfg.lr, cfg.branch_lr_scale, cfg.weight_decay)
        else:
            groups = [dict(params=[p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay, name="model")]
        if self.train_text:
            groups.append(dict(params=list(self.text.model.parameters()), lr=cfg.text_lr, weight_decay=0.0, name="text"))
        else:
            self.text.model.requires_grad_(False)
        return groups

    @torch.no_grad()
    def _encode_all_prompts(self) -> dict[str, torch.Tensor]:
        prompts = sorted(set(self.latents["instruction"])) + [""]
        contexts = torch.cat([self.text.encode(prompts[i: i + 64]).cpu() for i in range(0, len(prompts), 64)])
        return dict(zip(prompts, contexts))

    def _context(self, prompts: list[str]) -> torch.Tensor:
        device = self.accelerator.device
        if self._contexts is not None:
            return torch.stack([self._contexts[p] for p in prompts]).to(device)
        tokens = self.text.tokenize(prompts)
        return self.text.encode_tokens(tokens.input_ids.to(device), tokens.attention_mask.to(device))

    # -- one step ----------------------------------------------------------------------------------
    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, device = self.config, self.accelerator.device
        idx = self.batches.indices(step)
        gen = step_generator(cfg.seed, step, self.accelerator.process_index)
        batch = len(idx)
        sigma = shift_sigma(torch.rand(batch, generator=gen), cfg.train_shift)
        drop_text = torch.rand(batch, generator=gen) < cfg.text_dropout
        prompts = ["" if d else self.latents["instruction"][i] for d, i in zip(drop_text.tolist(), idx.tolist())]
        context = self._context(prompts)
        get = lambda key: self.latents[key][idx].to(device)
        s = sigma.view(-1, 1, 1, 1, 1).to(device)
        timestep = sigma.to(device) * 1000

        if cfg.mode == "vera":
            targets = {name: get(name) for name in BRANCHES}
            noise = {name: torch.randn(targets[name].shape, generator=gen).to(device) for name in BRANCHES}
            noisy = {name: (1 - s) * targets[name] + s * noise[name] for name in BRANCHES}
            dropout = torch.tensor([cfg.mask_dropout.get(self.latents["task"][i], 0.0) for i in idx.tolist()])
            keep = (self.latents["has_mask"][idx] & (torch.rand(batch, generator=gen) >= dropout)).float().to(device)
            with self.accelerator.autocast():
                preds = self.model(noisy["edit"], noisy["alpha"], noisy["composite"], timestep, context, get("source"),
                                   get("mask"), mask_keep=keep)
            losses = {name: ((pred.float() - (noise[name] - targets[name])) ** 2).mean() for name, pred in zip(BRANCHES, preds)}
            total = sum(losses.values())
            return total, {f"loss_{k}": v.item() for k, v in losses.items()}

        target = get("composite")
        noise = torch.randn(target.shape, generator=gen).to(device)
        with self.accelerator.autocast():
            pred = self.model((1 - s) * target + s * noise, timestep, context,
                              get("source") if cfg.mode == "baseline" else None)
        total = ((pred.float() - (noise - target)) ** 2).mean()
        return total, {}

    def run(self, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        log_path = self.out / "loss.jsonl"
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.mode}", disable=not (progress and acc.is_main_process),
                   dynamic_ncols=True)
        start = time.perf_counter()
        self.model.train()
        while self.step < cfg.steps:
            loss, parts = self.loss(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            if cfg.grad_clip:
                acc.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            self.optimizer.step()
            lr_used = self.optimizer.param_groups[0]["lr"]  # first group (edit in vera mode), this step's rate
            self.scheduler.step()
            self.step += 1
            value = acc.reduce(loss.detach(), "mean").item()
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if acc.is_main_process and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                record = dict(step=self.step, loss=value, **parts, lr=lr_used, processes=acc.num_processes,
                              parallel="fsdp" if self.sharded else ("ddp" if acc.num_processes > 1 else "none"),
                              seconds=round(time.perf_counter() - start, 2))
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """accelerate state (model, optimizer, scheduler, RNG) + step, written to a temporary folder and
        renamed into place, so an interrupted save never replaces a good checkpoint."""
        acc = self.accelerator
        final, tmp = self.out / "checkpoint", self.out / ".checkpoint.tmp"
        acc.wait_for_everyone()
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        if self.own_fsdp:
            self._save_sharded(tmp)
        else:
            acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(dict(step=self.step, config=asdict(self.config))))
            old = self.out / ".checkpoint.old"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            if old.exists():
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def resume(self) -> bool:
        """Load `out/checkpoint` if present; returns whether it did."""
        folder = self.out / "checkpoint"
        if not (folder / "trainer_state.json").is_file():
            return False
        state = json.loads((folder / "trainer_state.json").read_text())
        if self.own_fsdp:
            self._load_sharded(folder)
        else:
            self.accelerator.load_state(str(folder))
        self.step = int(state["step"])
        return True

    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The model's whole state dict on the main process (every process must call this: under
        FSDP the shards are gathered)."""
        if self.own_fsdp:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            return get_model_state_dict(self.model, options=_full_on_cpu())
        return self.accelerator.get_state_dict(self.model)

    def _save_sharded(self, folder: Path) -> None:
        """Our FSDP's checkpoint: the whole model and optimizer state (gathered by every process,
        written by the main one) and the schedule."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optim = get_state_dict(self.model, self.optimizer.optimizer, options=_full_on_cpu())
        if self.accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model, "optimizer": optim, "scheduler": self.scheduler.state_dict()},
                       folder / FSDP_STATE)

    def _load_sharded(self, folder: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = torch.load(folder / FSDP_STATE, map_location="cpu", weights_only=False)
        set_state_dict(self.model, self.optimizer.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])


FSDP_STATE = "fsdp_state.pt"


def _full_on_cpu():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _shard_for_training(model, device_type: str) -> None:
    """FSDP2 over every process: one unit per Vera block, the rest (embeddings, heads,
    conditioning) in the root unit."""
    from torch.distributed.fsdp import fully_shard

    from ..model.mot import BranchBlock
    from ..model.parallel import shard_mesh

    mesh = shard_mesh(None, device_type)
    for module in model.modules():
        if isinstance(module, BranchBlock):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _fsdp_block_methods(model) -> None:
    """Under FSDP2 with a block per unit, Vera runs a block through `before_attention` and
    `after_attention` (the joint attention sits between), not `forward`: register both, so each
    gathers the block's weights and reduces its gradients as `forward` would."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    from ..model.mot import BranchBlock

    for module in model.modules():
        if isinstance(module, BranchBlock) and isinstance(module, FSDPModule):
            register_fsdp_forward_method(module, "before_attention")
            register_fsdp_forward_method(module, "after_attention")

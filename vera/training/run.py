"""`train()`: load data, VAE, text encoder and the starting weights for a mode, train, save the result.

Outputs in `out/`:
  vera      vera.safetensors (a standard Vera file)
  t2v       wan_t2v.safetensors (Wan original key names, loads as a Wan2.1 T2V file) and, when the
            text encoder was trained, text_encoder/
  baseline  baseline.safetensors (Wan keys + source_embedding.*)
plus checkpoint/ (resumable state), loss.jsonl and train_config.json.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoints.safetensors_io import atomic_save, load_tensors, read_header
from ..checkpoints.weights import detect, load_model, read_wan_branch, save_vera
from ..encoders.text import TextEncoder
from ..encoders.vae import load_vae
from ..media.files import relative_to, save_json
from ..model.config import VeraConfig
from ..model.single import WanVideoModel
from .latents import cached_latents
from .trainer import TrainConfig, Trainer


def wan_video_model(init: str | Path | None, model_config: VeraConfig | None, source_conditioning: bool) -> WanVideoModel:
    """From a Wan2.1 T2V file (`init`), or fresh random weights of `model_config`."""
    if init is None:
        if model_config is None:
            raise ValueError("training from scratch needs a model config (--model-config JSON)")
        torch.manual_seed(0)
        return WanVideoModel(model_config, source_conditioning)
    config, state = read_wan_branch(init, torch.float32)
    model = WanVideoModel(config, source_conditioning)
    model.branch.load_state_dict(state, strict=True)
    return model


def save_wan(model: WanVideoModel, path: Path) -> Path:
    state = model.wan_state_dict()
    if model.source_embedding is not None:
        state.update({f"source_embedding.{k}": v.detach() for k, v in model.source_embedding.state_dict().items()})
    return atomic_save(state, path, {"num_attention_heads": str(model.config.num_heads), "config": model.config.to_json()})


def load_baseline(path: str | Path) -> WanVideoModel:
    entries, metadata = read_header(path)
    model = WanVideoModel(VeraConfig.from_json(metadata["config"]), source_conditioning=True)
    tensors = load_tensors(entries)
    model.branch.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("source_embedding.")})
    model.source_embedding.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("source_embedding.")})
    return model.eval()


def _plain_copy(model, state: dict):
    """A model of `model`'s class and config holding `state` (gathered from FSDP shards)."""
    import torch

    with torch.device("meta"):
        plain = type(model)(model.config)
    plain.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, assign=True)
    return plain


def train(config: TrainConfig, data: str | Path, out: str | Path, vae_file: str | Path,
          text_encoder: str | Path, **options) -> Path | None:
    """Returns the final weights' path (None on processes other than the main one). options: init,
    model_config, train_text, resume, progress, cache_dir (see `_train`). With --fsdp each process
    leaves the process group once the model is saved, its sharded model dropped (`leave_group`)."""
    import torch.distributed as dist

    weights = _train(config, data, out, vae_file, text_encoder, **options)
    if config.fsdp and dist.is_initialized():
        from ..model.parallel import leave_group

        leave_group()
    return weights


def _train(config: TrainConfig, data: str | Path, out: str | Path, vae_file: str | Path,
           text_encoder: str | Path, init: str | Path | None = None,
           model_config: VeraConfig | None = None, train_text: bool = False, resume: bool = True,
           progress: bool = True, cache_dir: str | Path | None = None) -> Path | None:
    """`train`. cache_dir: where encoded latents are kept (default out/cache); runs on the same
    data and VAE can share it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vae = load_vae(vae_file)
    latents = cached_latents(data, vae, vae_file, cache_dir or out / "cache")
    del vae
    text = TextEncoder.from_folder(text_encoder)
    if config.mode == "vera":
        if init is None:
            raise ValueError("vera mode starts from a Wan2.1 T2V file or a Vera file: pass --init")
        # a Wan2.1 T2V file starts a fresh Vera (the paper's recipe); a Vera file continues training
        model = load_model(init, "fp32", from_wan=detect(init).format != "vera")
        if config.lora_rank:
            from .lora import shared_base_lora
            model = shared_base_lora(model, config.lora_rank)
    else:
        model = wan_video_model(init, model_config, source_conditioning=config.mode == "baseline")
    given = dict(data=data, vae=vae_file, text_encoder=text_encoder, init=init)
    paths = {k: relative_to(v, out) for k, v in given.items()}  # relative to the run folder
    model_json = None if model_config is None else json.loads(model_config.to_json())
    save_json(out / "train_config.json", dict(config=asdict(config), **paths,
                                              model_config=model_json, train_text=train_text))
    trainer = Trainer(config, model, latents, text, out, train_text=train_text)
    if trainer.sharded and (config.mode != "vera" or config.lora_rank):
        raise ValueError(f"FSDP training runs --mode vera without --lora-rank (asked: --mode "
                         f"{config.mode}{', --lora-rank' if config.lora_rank else ''}); use DDP "
                         "(accelerate launch --multi_gpu) or one process for that")
    if resume and trainer.resume():
        print(f"resumed from {out / 'checkpoint'} at step {trainer.step}")
    trainer.run(progress)
    acc = trainer.accelerator
    state = trainer.full_state() if trainer.sharded else None  # a collective: every process
    if not acc.is_main_process:
        return None
    model = trainer.unwrapped()
    if state is not None:  # FSDP: a plain model with the gathered weights
        model = _plain_copy(model, state)
    meta = {"train_config": json.dumps(asdict(config))}
    if config.mode == "vera":
        if config.lora_rank:
            from .lora import lora_file_tensors, merge_lora

            base = load_model(init, "fp32", from_wan=detect(init).format != "vera")
            # the adapters as a LoRA file too: --lora on the starting weights gives the merged model
            atomic_save(lora_file_tensors(model, base), out / "vera_lora.safetensors",
                        {"format": "vera-lora", "base": Path(init).name, **meta})
            model = merge_lora(model)
        return save_vera(model, out / "vera.safetensors", meta)
    if config.mode == "t2v":
        if train_text:
            from .text_model import save_text_encoder
            save_text_encoder(text, out / "text_encoder")
        return save_wan(model, out / "wan_t2v.safetensors")
    return save_wan(model, out / "baseline.safetensors")

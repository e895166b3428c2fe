"""Text conditioning: UMT5 encoding from local files (as Wan2.1 does it), or precomputed embeddings.

Wan's convention: 512 tokens, embeddings zeroed past each prompt's length. ComfyUI's Wan text
encoder (CLIPLoader type `wan` + CLIPTextEncode) gives CONDITIONING in the same convention, so
either source feeds the model's cross-attention directly as `[B, L>=512, 4096]`.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import torch

WAN_TEXT_LEN = 512


def clean_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def pad_context(context: torch.Tensor, length: int = WAN_TEXT_LEN) -> torch.Tensor:
    """Zero-pad precomputed embeddings `[L, D]` or `[B, L, D]` to at least `length` tokens -> `[B, L', D]`."""
    if context.ndim == 2:
        context = context.unsqueeze(0)
    if context.ndim != 3:
        raise ValueError(f"text embeddings must be [B, L, D] or [L, D], got shape {tuple(context.shape)}")
    if context.shape[1] >= length:
        return context
    pad = context.new_zeros(context.shape[0], length - context.shape[1], context.shape[2])
    return torch.cat([context, pad], dim=1)


class TextEncoder:
    """A UMT5 encoder plus its tokenizer, loaded from a local Hugging Face folder (never from a hub)."""

    def __init__(self, model, tokenizer, max_length: int = WAN_TEXT_LEN):
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length

    @classmethod
    def from_folder(cls, folder: str | Path, dtype=torch.float32, device="cpu", max_length: int = WAN_TEXT_LEN):
        from transformers import AutoTokenizer, UMT5EncoderModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder}: not a text-encoder folder (needs config.json, the weights and tokenizer files "
                "of a UMT5 encoder, e.g. the text_encoder/ + tokenizer/ of a Wan2.1 diffusers folder)"
            )
        # diffusers layout keeps the tokenizer beside the text encoder (text_encoder/ + tokenizer/)
        tokenizer_dir = next((d for d in (folder / "tokenizer", folder.parent / "tokenizer") if d.is_dir()), folder)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        model = UMT5EncoderModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).to(device)
        # small self-made encoders (vera-tiny) declare a shorter context in their tokenizer
        limit = getattr(tokenizer, "model_max_length", max_length) or max_length
        return cls(model, tokenizer, min(max_length, int(limit)))

    def tokenize(self, prompts: list[str]):
        return self.tokenizer(
            [clean_prompt(p) for p in prompts], padding="max_length", max_length=self.max_length,
            truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids `[B, L]` -> `[B, L, D]` float32, zeroed past each prompt (keeps gradients, for training)."""
        hidden = self.model(input_ids, attention_mask).last_hidden_state.float()
        return hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)

    @torch.no_grad()
    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Prompts -> `[B, max_length, D]` float32, zeroed past each prompt's token count."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tokens = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        return self.encode_tokens(tokens.input_ids.to(device), tokens.attention_mask.to(device))

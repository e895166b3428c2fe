"""A small UMT5 text encoder with a word-level tokenizer, built offline from a vocabulary.

It has Wan's text-encoder architecture (transformers' `UMT5EncoderModel`) at a tiny size and is saved
as a local Hugging Face folder, so `vera.encoders.text.TextEncoder.from_folder` loads it like the
real one.
"""
from __future__ import annotations

from pathlib import Path

import torch

SPECIAL = ["<pad>", "</s>", "<unk>"]


def build_text_encoder(folder: str | Path, words: list[str], d_model: int = 64, layers: int = 2, heads: int = 4,
                       seed: int = 0, max_length: int = 32):
    """Create and save a random tiny UMT5 + tokenizer at `folder`; returns a `TextEncoder` on it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from ..encoders.text import TextEncoder

    vocab = {w: i for i, w in enumerate(SPECIAL + sorted(set(words) - set(SPECIAL)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        model_max_length=max_length)
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=len(vocab), d_model=d_model, d_kv=d_model // heads, num_heads=heads, num_layers=layers,
                        d_ff=2 * d_model, relative_attention_num_buckets=16, relative_attention_max_distance=32,
                        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = UMT5EncoderModel(config)
    save_text_encoder(TextEncoder(model, tokenizer, max_length), folder)
    return TextEncoder(model, tokenizer, max_length)


def save_text_encoder(encoder, folder: str | Path) -> Path:
    folder = Path(folder)
    encoder.model.save_pretrained(folder, safe_serialization=True)
    encoder.tokenizer.save_pretrained(folder)
    return folder

"""Synthetic full-size model files (random values, the exact shapes and key names users have), for
checks that need real sizes without real weights:

    python scripts/synthetic_models.py --out DIR [--vera-dtype fp8|bf16] [--umt5 fp8|fp16]

writes, in ComfyUI's folder layout under DIR:
    diffusion_models/vera_1.3b_synthetic_<dtype>.safetensors   Vera-1.3B in our format
    vae/wan_2.1_vae_synthetic.safetensors                      Wan2.1 VAE, ComfyUI key names
    text_encoders/umt5_xxl_synthetic_<dtype>.safetensors       umT5-XXL encoder for CLIPLoader
                                                               type `wan` (fp8: scaled fp8)
Tensors are made and written one at a time (the streaming writer), so memory stays small. Files
that exist are kept. The umT5 file carries a small SentencePiece model as `spiece_model` (as
ComfyUI's umT5 files carry the real one), trained here on English prompts; it needs the
`sentencepiece` package, which ComfyUI's Python has. Prints one JSON line with the paths.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# umT5-XXL's encoder (the text encoder of Wan2.1): sizes from its published config
UMT5_XXL = dict(vocab=256_384, d_model=4096, d_ff=10_240, heads=64, d_kv=64, layers=24, buckets=32)


def random_refs(shapes: dict, dtype, fp8=lambda name, shape: False, prefix: str = "",
                seed: int = 0, std: float = 0.02) -> dict:
    """Lazy random tensors {name: TensorRef} for `vera.checkpoints.safetensors_io.atomic_save`,
    in `dtype`; those `fp8(name, shape)` picks are stored as ComfyUI's scaled fp8 (float8 weight
    plus a `scale_weight` beside it)."""
    from vera.checkpoints.containers import TensorRef
    from vera.model.fp8 import FP8, quantize

    g = torch.Generator().manual_seed(seed)
    refs = {}
    for name, shape in shapes.items():
        make = lambda s=shape: torch.randn(s, generator=g) * std
        key = prefix + name
        if fp8(name, shape):
            refs[key] = TensorRef(key, shape, FP8, lambda m=make: quantize(m())[0])
            # about the scale quantize picks for N(0, std) values (max |x| ~ 4.5 std -> 448)
            scale = prefix + name[: -len("weight")] + "scale_weight"
            refs[scale] = TensorRef(scale, (), torch.float32,
                                    lambda: torch.tensor(std * 4.5 / 448))
        else:
            refs[key] = TensorRef(key, shape, dtype, lambda m=make: m().to(dtype))
    return refs


def vera_shapes(config) -> dict:
    from vera.model.mot import VeraModel

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in VeraModel(config).state_dict().items()}


def umt5_shapes() -> dict:
    """The umT5-XXL encoder's tensors under the names ComfyUI's `wan` text encoder loads."""
    c = UMT5_XXL
    inner = c["heads"] * c["d_kv"]
    shapes = {"shared.weight": (c["vocab"], c["d_model"]),
              "encoder.final_layer_norm.weight": (c["d_model"],)}
    for i in range(c["layers"]):
        block = f"encoder.block.{i}.layer"
        for proj in "qkv":
            shapes[f"{block}.0.SelfAttention.{proj}.weight"] = (inner, c["d_model"])
        shapes[f"{block}.0.SelfAttention.o.weight"] = (c["d_model"], inner)
        shapes[f"{block}.0.SelfAttention.relative_attention_bias.weight"] = (c["buckets"],
                                                                              c["heads"])
        shapes[f"{block}.0.layer_norm.weight"] = (c["d_model"],)
        shapes[f"{block}.1.DenseReluDense.wi_0.weight"] = (c["d_ff"], c["d_model"])
        shapes[f"{block}.1.DenseReluDense.wi_1.weight"] = (c["d_ff"], c["d_model"])
        shapes[f"{block}.1.DenseReluDense.wo.weight"] = (c["d_model"], c["d_ff"])
        shapes[f"{block}.1.layer_norm.weight"] = (c["d_model"],)
    return shapes


def spiece_model() -> torch.Tensor:
    """A small SentencePiece model (T5's ids: pad 0, eos 1, unk 2, no bos) as a uint8 tensor."""
    import io
    import itertools

    try:
        import sentencepiece
    except ImportError:
        raise SystemExit("the umT5 file needs a tokenizer: pip install sentencepiece, or run this "
                         "with ComfyUI's Python") from None
    words = ("add a small large red green blue yellow purple white orange black circle square "
             "triangle moving from left to right top bottom diagonally replace the background "
             "with and gradient stripes checkerboard person walking street car camera sky tree "
             "water night day light shadow bright dark blurry low quality static").split()
    sentences = [" ".join(c) for c in itertools.islice(itertools.permutations(words, 6), 20_000)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=64, pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, minloglevel=2)
    return torch.frombuffer(bytearray(model.getvalue()), dtype=torch.uint8)


def write_all(out: Path, vera_dtype: str = "fp8", umt5: str = "fp8") -> dict:
    from diffusers import AutoencoderKLWan

    from vera.checkpoints.safetensors_io import atomic_save
    from vera.checkpoints.weights import VERA_FORMAT_VERSION
    from vera.encoders.vae import save_vae_original
    from vera.model.config import PRESETS
    from vera.model.fp8 import FP8

    config = PRESETS["wan2.1-1.3B"]
    paths = dict(
        vera=out / "diffusion_models" / f"vera_1.3b_synthetic_{vera_dtype}.safetensors",
        vae=out / "vae" / "wan_2.1_vae_synthetic.safetensors",
        umt5=out / "text_encoders" / f"umt5_xxl_synthetic_{umt5}.safetensors")
    if not paths["vera"].exists():
        block_linear = lambda name, shape: ".blocks." in name and len(shape) == 2
        refs = random_refs(vera_shapes(config), torch.bfloat16,
                           block_linear if vera_dtype == "fp8" else lambda n, s: False)
        if vera_dtype == "fp8":
            refs["scaled_fp8"] = torch.zeros(0, dtype=FP8)
        meta = {"format": "vera", "format_version": VERA_FORMAT_VERSION, "config": config.to_json()}
        atomic_save(refs, paths["vera"], meta)
    if not paths["vae"].exists():
        torch.manual_seed(0)
        save_vae_original(AutoencoderKLWan().eval(), paths["vae"])
    if not paths["umt5"].exists():
        linear = lambda name, shape: umt5 == "fp8" and ("SelfAttention." in name or
                                                        "DenseReluDense." in name) and \
            "relative_attention_bias" not in name
        refs = random_refs(umt5_shapes(), torch.float16, linear, seed=1)
        refs["spiece_model"] = spiece_model()
        if umt5 == "fp8":
            refs["scaled_fp8"] = torch.zeros(0, dtype=FP8)
        atomic_save(refs, paths["umt5"])
    return {k: str(v) for k, v in paths.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vera-dtype", choices=("fp8", "bf16"), default="fp8")
    parser.add_argument("--umt5", choices=("fp8", "fp16"), default="fp8")
    args = parser.parse_args()
    print(json.dumps(write_all(args.out, args.vera_dtype, args.umt5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

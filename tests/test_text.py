import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from vera.encoders.text import TextEncoder, pad_context


def make_umt5_folder(folder):
    """A random tiny UMT5 encoder and a word-level tokenizer, saved as a local HF folder."""
    words = "<pad> </s> <unk> add a red ball bouncing from left to right replace the background with snow".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(vocab_size=len(words), d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=64,
                                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
    model.save_pretrained(folder)
    return model


def test_umt5_encoding_follows_wan_convention(tmp_path):
    reference = make_umt5_folder(tmp_path).eval()
    encoder = TextEncoder.from_folder(tmp_path)
    # the diffusers layout: text_encoder/ with tokenizer/ beside it
    reference.save_pretrained(tmp_path / "wan" / "text_encoder")
    encoder.tokenizer.save_pretrained(tmp_path / "wan" / "tokenizer")
    diffusers_layout = TextEncoder.from_folder(tmp_path / "wan" / "text_encoder")
    torch.testing.assert_close(diffusers_layout.encode("add a ball"), encoder.encode("add a ball"),
                               rtol=1e-5, atol=1e-6)
    prompts = ["add a red ball", "replace the background with snow  "]
    out = encoder.encode(prompts)
    assert out.shape == (2, 512, 32)
    lengths = [5, 6]  # words + </s>
    ids = [torch.tensor([3, 4, 5, 6, 1]), torch.tensor([12, 13, 14, 15, 16, 1])]
    for i, n in enumerate(lengths):
        with torch.no_grad():
            alone = reference(ids[i].unsqueeze(0)).last_hidden_state[0]
        torch.testing.assert_close(out[i, :n], alone, atol=1e-5, rtol=1e-5)
        assert torch.count_nonzero(out[i, n:]) == 0


def test_pad_context():
    ctx = torch.randn(7, 16)
    padded = pad_context(ctx)
    assert padded.shape == (1, 512, 16) and torch.equal(padded[0, :7], ctx) and not padded[0, 7:].any()
    long = torch.randn(2, 600, 16)
    assert pad_context(long) is long

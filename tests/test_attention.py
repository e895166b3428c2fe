import pytest
import torch

from vera.model.attention import (
    attention,
    joint_attention,
    naive_attention,
    resolve_backend,
    xformers_available,
)


def streams(lengths=(12, 12, 20), heads=4, dim=16, batch=2):
    return [tuple(torch.randn(batch, n, heads, dim) for _ in range(3)) for n in lengths]


def textbook(q, k, v):
    """softmax(Q K^T / sqrt(d)) V per batch and head, written with plain loops."""
    out = torch.empty_like(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            s = q[b, :, h] @ k[b, :, h].T / q.shape[-1] ** 0.5
            out[b, :, h] = torch.softmax(s, dim=-1) @ v[b, :, h]
    return out


def test_joint_call_equals_naive_attention_over_concatenated_tokens():
    s = streams()
    got = joint_attention(s, backend="sdpa")
    q, k, v = (torch.cat([x[i] for x in s], dim=1) for i in range(3))
    expected = textbook(q, k, v).split([12, 12, 20], dim=1)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_joint_attention_mixes_streams_and_separate_does_not():
    s = streams()
    joint, separate = joint_attention(s, "sdpa"), joint_attention(s, "sdpa", joint=False)
    for (q, k, v), sep in zip(s, separate):
        torch.testing.assert_close(sep, textbook(q, k, v), atol=1e-5, rtol=1e-5)
    assert (joint[0] - separate[0]).abs().max() > 1e-3


def test_sdpa_and_naive_backends_agree():
    q, k, v = streams(lengths=(33,))[0]
    torch.testing.assert_close(attention(q, k, v, "sdpa"), naive_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_auto_picks_sdpa_without_cuda_and_xformers_refuses_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="xformers.*CUDA"):
        resolve_backend("xformers", torch.device("cpu"))
    with pytest.raises(ValueError, match="not one of"):
        resolve_backend("flash", torch.device("cpu"))


@pytest.mark.skipif(not (torch.cuda.is_available() and xformers_available()), reason="needs CUDA and xformers")
def test_xformers_matches_sdpa_in_bf16():
    s = [tuple(t.cuda().bfloat16() for t in x) for x in streams(lengths=(256, 256, 256), heads=12, dim=128, batch=1)]
    a, b = joint_attention(s, "xformers"), joint_attention(s, "sdpa")
    for x, y in zip(a, b):
        torch.testing.assert_close(x.float(), y.float(), atol=2e-2, rtol=2e-2)


def test_importing_and_running_the_library_leaves_diffusers_settings_alone():
    """Inside ComfyUI other packs share diffusers: the library must not flip its module flags."""
    import subprocess
    import sys

    probe = (
        "import torch, diffusers.utils.import_utils as iu\n"
        "flags = lambda: {k: v for k, v in vars(iu).items() if k.endswith('_available')}\n"
        "before = flags()\n"
        "import vera, vera.model.mot, vera.model.attention, vera.encoders.vae\n"
        "import vera.edit.pipeline, vera.edit.bundle\n"
        "vera.model.attention.resolve_backend('auto', torch.device('cpu'))\n"
        "changed = {k: (before.get(k), v) for k, v in flags().items() if before.get(k) != v}\n"
        "assert before and not changed, changed\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from vera.checkpoints.safetensors_io import CheckpointError, atomic_save, load_tensors, read_header
from vera.encoders import vae as V


@pytest.fixture(scope="module")
def video():
    return torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_original_key_map_agrees_with_diffusers_converter(tiny_vae_model, files):
    original = load_tensors(read_header(files["vae_original"])[0])
    converted = convert_wan_vae_to_diffusers(dict(original))  # diffusers' own mapping, independent of ours
    reference = tiny_vae_model.state_dict()
    assert set(converted) == set(reference)
    assert all(torch.equal(converted[k], reference[k]) for k in reference)
    ours = V.original_to_diffusers(list(original))
    assert all(converted[ours[k]] is not None and torch.equal(converted[ours[k]], original[k]) for k in original)


def test_vae_from_original_keys_matches_diffusers(tiny_vae_model, files, video):
    vae = V.load_vae(files["vae_original"])
    with torch.no_grad():
        ref_mu = tiny_vae_model.encode(video).latent_dist.mode()
        ref_video = tiny_vae_model.decode(ref_mu).sample
    latent = V.encode(vae, video)
    assert latent.shape == (1, 16, 3, 8, 8)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latent, (ref_mu - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(V.decode(vae, latent), ref_video, atol=1e-5, rtol=0)


def test_chunked_decode_equals_one_shot_decode_and_reports_progress(tiny_vae_model, video):
    latent = V.encode(tiny_vae_model, video)
    seen = []
    chunked = V.decode(tiny_vae_model, latent, chunk_callback=lambda done, total: seen.append((done, total)))
    mean = torch.tensor(tiny_vae_model.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(tiny_vae_model.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        whole = tiny_vae_model.decode(latent * std + mean).sample
    assert torch.equal(chunked, whole)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_diffusers_named_file_and_folder_load(tiny_vae_model, tmp_path, video):
    atomic_save(tiny_vae_model.state_dict(), tmp_path / "vae_diffusers.safetensors")
    tiny_vae_model.save_pretrained(tmp_path / "vae_folder")
    for path in (tmp_path / "vae_diffusers.safetensors", tmp_path / "vae_folder"):
        torch.testing.assert_close(V.encode(V.load_vae(path), video), V.encode(tiny_vae_model, video))


def test_matte_encoding_is_grey_video(tiny_vae_model):
    matte = torch.rand(5, 32, 32, 1)  # frames
    grey = (matte.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1).expand(-1, 3, -1, -1, -1)  # by hand
    torch.testing.assert_close(V.encode_matte(tiny_vae_model, matte), V.encode(tiny_vae_model, grey))
    decoded = V.decode_matte(tiny_vae_model, V.encode_matte(tiny_vae_model, matte))
    assert decoded.shape == (5, 32, 32, 1) and decoded.min() >= 0 and decoded.max() <= 1
    rgb = V.decode(tiny_vae_model, V.encode_matte(tiny_vae_model, matte))
    by_hand = ((rgb[0].mean(0) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(decoded[..., 0], by_hand, atol=1e-6, rtol=0)


def test_model_file_given_as_vae_is_refused(files):
    with pytest.raises(CheckpointError, match="diffusion model, not a VAE"):
        V.load_vae(files["wan_comfy"])


def test_vae_refuses_frame_counts_it_would_silently_truncate(tiny_vae_model):
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        V.encode(tiny_vae_model, torch.zeros(1, 3, 10, 32, 32))


def test_encoder_in_pieces_equals_diffusers_encode(tiny_vae_model):
    """A long clip encoded as it is read (1 frame, then 4 at a time, in uneven pieces) gives the
    latents diffusers' own encode gives for the whole clip."""
    video = torch.rand(1, 3, 13, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = tiny_vae_model.encode(video).latent_dist.mode()
    encoder = V.CausalEncoder(tiny_vae_model)
    pieces = [encoder.encode(video[:, :, a:b]) for a, b in ((0, 1), (1, 9), (9, 13))]
    streamed = torch.cat(pieces, dim=2)
    torch.testing.assert_close(streamed, reference, atol=1e-5, rtol=0)
    assert torch.equal(streamed, V.encode_raw(tiny_vae_model, video)), "one implementation"
    with pytest.raises(ValueError, match="4-frame chunks"):
        V.CausalEncoder(tiny_vae_model).encode(video[:, :, :3])


def test_decoders_side_by_side_keep_their_own_cache(tiny_vae_model):
    """Three layers decoded in lockstep, one latent frame each in turn, equal each one decoded
    alone: the decoders share the VAE but not its causal cache."""
    latents = [torch.randn(1, 16, 4, 4, 4) for _ in range(3)]
    alone = [V.decode_raw(tiny_vae_model, z) for z in latents]
    decoders = [V.CausalDecoder(tiny_vae_model) for _ in latents]
    chunks = [[], [], []]
    for t in range(4):
        for k, (decoder, z) in enumerate(zip(decoders, latents)):
            chunks[k].append(decoder.decode(z[:, :, t:t + 1]))
    assert [c[0].shape[2] for c in chunks] == [1, 1, 1] and chunks[0][1].shape[2] == 4
    for k in range(3):
        assert torch.equal(torch.cat(chunks[k], dim=2), alone[k])

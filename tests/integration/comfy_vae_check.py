"""Run by tests/integration with ComfyUI's own Python, inside a ComfyUI checkout (cwd): ComfyUI's Wan2.1 VAE
(comfy.sd.VAE) behind our bridge must give the same normalised latents and frames as our diffusers path.

    python comfy_vae_check.py PACK_DIR VAE_FILE    -> prints a JSON report
"""
import importlib.util
import json
import sys
from pathlib import Path

import torch

pack_dir, vae_file = Path(sys.argv[1]), Path(sys.argv[2])
sys.argv = [sys.argv[0]] + ([] if torch.cuda.is_available() else ["--cpu"])  # ComfyUI parses its flags at import
sys.path.insert(0, ".")
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()  # as ComfyUI's main.py does, so --cpu is honoured
import comfy.latent_formats  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402

spec = importlib.util.spec_from_file_location("vera_pack_check", pack_dir / "__init__.py",
                                              submodule_search_locations=[str(pack_dir)])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
bridge, vae_ops = pack.nodes.vae_bridge, pack.vera.encoders.vae

comfy_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_file)))
ours = vae_ops.WanCodec(vae_ops.load_vae(vae_file))
theirs = bridge.ComfyVAECodec(comfy_vae)
frames = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))  # IMAGE
with torch.no_grad():
    a, b = ours.encode_frames(frames), theirs.encode_frames(frames)
    da, db = ours.decode_frames(a), theirs.decode_frames(a)
fmt = comfy.latent_formats.Wan21()
diffusers_vae = vae_ops.load_vae(vae_file)  # its config holds diffusers' default Wan2.1 statistics
mean, std = vae_ops.latent_stats(diffusers_vae, torch.zeros(1))
print(json.dumps(dict(
    encode_max_abs=float((a - b).abs().max()), latent_abs_mean=float(a.abs().mean()),
    decode_max_abs=float((da - db).abs().max()), comfy_vae_dtype=str(comfy_vae.vae_dtype),
    stats_match_comfy_wan21=bool(torch.allclose(fmt.latents_mean.reshape(mean.shape), mean)
                                 and torch.allclose(fmt.latents_std.reshape(std.shape), std)),
    bridge_uses_comfy_wan21=bool(pack.nodes.host.IN_COMFYUI),
)))

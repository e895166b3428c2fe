"""Checkpoints: opening any container tensor by tensor (`containers`, `safetensors_io`), telling
what a file is from names and shapes (`detect`), and loading, converting and saving Vera weights
(`weights`, which also names the embedded vera-tiny). Uses the model and media's atomic files."""

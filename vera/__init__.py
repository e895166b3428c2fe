"""Vera: layered video editing (edit layer + alpha matte + composite) on Wan2.1, without ComfyUI.

Wings, top to bottom (each may import those below it; pyproject.toml's import-linter contracts):
the command line (`__main__`, `client`), `training`, `evaluation`, `edit`, then `sampling`,
`encoders` and `data`, then `checkpoints`, and on the ground `model`, `media` and `frames`.
"""

__version__ = "0.1.0"

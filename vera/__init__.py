"""Vera: layered video editing (edit layer + alpha matte + composite) on Wan2.1, without ComfyUI.

Wings, top to bottom (each may import those below it; pyproject.toml's import-linter contracts):
the command line (`__main__`, `client`), `training`, `evaluation`, `edit`, then `sampling`,
`encoders` and `data`, then `checkpoints`, and on the ground `model`, `media` and `frames`.
"""

__version__ = "0.1.0"


class VeraError(Exception):
    """Base of the library's own exceptions, which are named by their path inside vera
    (`vera.sampling.settings.SettingsError`) however vera was imported: ComfyUI imports a pack
    under its folder path, and its error dialog shows an exception's module as its type."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        parts = cls.__module__.split(".")
        if "vera" in parts:
            cls.__module__ = ".".join(parts[parts.index("vera"):])

"""ComfyUI entry point for ComfyUI-Vera. ComfyUI loads this file with the pack folder as a package,
so relative imports work and `vera/` stays importable on its own."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

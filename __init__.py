"""ComfyUI entry point for ComfyUI-Vera. ComfyUI loads this file with the pack folder as a package,
so relative imports work and `vera/` stays importable on its own."""
WEB_DIRECTORY = "./web"

if __package__:  # pytest also imports this file, as a plain module when the folder's name is no
    # identifier (a clone in `ComfyUI-Vera/`); there is nothing to register then
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

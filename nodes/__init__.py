"""ComfyUI node adapters (thin: ComfyUI types <-> `vera` calls). The node set lands with the node-pack issue."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

"""ComfyUI node adapters (thin: ComfyUI types <-> `vera` calls), classic node API.

One module per node family; each lists its classes in `NODES = {id: (display name, class)}`.
"""
from . import (
    edit_nodes,
    host,
    layer_ops,
    lora_nodes,
    model_nodes,
    save_nodes,
    speed_nodes,
    stack_nodes,
    window_nodes,
)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (model_nodes, lora_nodes, edit_nodes, speed_nodes, window_nodes, layer_ops,
                stack_nodes, save_nodes):
    for _id, (_name, _cls) in _module.NODES.items():
        NODE_CLASS_MAPPINGS[_id] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_id] = _name

if host.IN_COMFYUI:
    from . import routes

    routes.register()

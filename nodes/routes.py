"""A small status route on ComfyUI's server: which Vera models its model manager holds.

    GET /vera/status -> {"loaded": [{"name", "device", "loaded_bytes", "total_bytes"}, ...]}

For people checking what stays in memory between runs (and for our integration tests).
"""
from __future__ import annotations


def register() -> None:
    """Add the route when a ComfyUI server runs (not when a script imports the pack)."""
    import comfy.model_management as mm
    from aiohttp import web

    try:
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is None:
        return
    from ..vera.model.mot import VeraModel

    @PromptServer.instance.routes.get("/vera/status")
    async def vera_status(request):
        loaded = []
        for patcher in mm.loaded_models():
            model = getattr(patcher, "model", None)
            if isinstance(model, VeraModel):
                loaded.append(dict(name=model.source_name, device=str(patcher.load_device),
                                   loaded_bytes=patcher.loaded_size(),
                                   total_bytes=patcher.model_size()))
        return web.json_response({"loaded": loaded})

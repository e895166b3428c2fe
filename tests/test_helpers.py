"""The test suite's own helpers that decide a result."""
from helpers import names_the_pack


def test_a_log_line_names_the_pack_only_by_its_folder_under_custom_nodes():
    core = "WARNING IMPORT FAILED: /srv/ComfyUI/comfy_extras/nodes_audio.py"
    assert not names_the_pack(core, "p") and not names_the_pack(core, "nodes_audio.py")
    assert names_the_pack("   0.1 seconds (IMPORT FAILED): /srv/ComfyUI/custom_nodes/p", "p")
    assert names_the_pack("Cannot import /srv/ComfyUI/custom_nodes/p module for custom nodes:", "p")
    assert names_the_pack("IMPORT FAILED: C:\\ComfyUI\\custom_nodes\\p", "p")
    assert not names_the_pack("IMPORT FAILED: /srv/ComfyUI/custom_nodes/p2", "p")
    assert not names_the_pack("IMPORT FAILED: /srv/ComfyUI/custom_nodes/ComfyUI-Vera", "Vera")

"""The shared workflows: well-formed, only our nodes and ComfyUI core nodes, consistent links, valid values,
and the UI and API file of each workflow describing the same graph."""
import json
from pathlib import Path

import pytest
from helpers import workflow_script

ROOT = Path(__file__).resolve().parents[1]
wf = workflow_script()
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
API_FILES = sorted((ROOT / "workflows" / "api").glob("*_api.json"))


def test_each_workflow_has_both_formats_and_all_six_exist():
    names = {p.stem for p in UI_FILES}
    assert names == {p.stem[: -len("_api")] for p in API_FILES}
    assert names == {"vera_tiny_object_addition", "vera_tiny_background_change",
                     "vera_tiny_long_shot", "vera_tiny_layer_stack", "vera_wan13b_object_addition",
                     "vera_wan13b_background_change"}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_links_are_consistent(path, pack):
    ui = json.loads(path.read_text())
    assert ui["version"] == 0.4 and {"nodes", "links", "groups", "config", "extra"} <= set(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] >= max(nodes)
    links = {l[0]: l for l in ui["links"]}
    assert len(links) == len(ui["links"]) and ui["last_link_id"] >= max(links)
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        output, target = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert link_id in output["links"] and target["link"] == link_id, (path.name, link_id)
        assert output["type"] == target["type"] == kind, (path.name, link_id)
    for node in ui["nodes"]:
        assert (node["type"] in pack.NODE_CLASS_MAPPINGS or node["type"] in wf.CORE_NODES
                or node["type"] in wf.NOTE_TYPES), node["type"]
        for slot in node["inputs"]:
            assert slot["link"] is None or links[slot["link"]][3] == node["id"]
        for output in node["outputs"]:
            assert all(links[i][1] == node["id"] for i in output["links"])


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_valid_for_our_nodes(path, pack):
    api = json.loads(path.read_text())
    for node_id, node in api.items():
        kind = node["class_type"]
        assert kind in pack.NODE_CLASS_MAPPINGS or kind in wf.CORE_NODES, kind
        assert node["_meta"]["title"]
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link: [source id, output slot] of a matching type
                src = api[value[0]]
                outputs = wf.node_signature(src["class_type"], pack)[2]
                assert value[1] < len(outputs), (path.name, node_id, name)
        if kind not in pack.NODE_CLASS_MAPPINGS:
            continue
        spec = pack.NODE_CLASS_MAPPINGS[kind].INPUT_TYPES()
        assert set(spec["required"]) <= set(node["inputs"]), (path.name, node_id)
        for name, value in node["inputs"].items():
            expected, options = {**spec["required"], **spec.get("optional", {})}[name]
            if isinstance(value, list):
                src = api[value[0]]
                assert wf.node_signature(src["class_type"], pack)[2][value[1]][1] == expected, (path.name, name)
            elif isinstance(expected, list) and name != "model_name":  # model files differ per machine
                assert value in expected, (path.name, name, value)
            elif expected in ("INT", "FLOAT"):
                assert options.get("min", value) <= value <= options.get("max", value), (path.name, name, value)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_and_api_files_describe_the_same_graph(path, pack):
    ui = json.loads(path.read_text())
    api = json.loads((ROOT / "workflows" / "api" / f"{path.stem}_api.json").read_text())
    assert wf.ui_to_api(ui, pack) == api


def test_workflow_files_are_what_the_builder_writes(pack):
    stale = [p.name for p, text in wf.render_all(pack).items() if p.read_text() != text]
    assert not stale, f"regenerate with python scripts/workflows.py: {stale}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_workflows_explain_themselves_and_wire_the_source_rate(path, pack):
    """Instructions on the canvas (MarkdownNote), downloadable model files in node properties, the
    VIDEO straight into Vera Encode, and the source's rate (fps 0 + vera_shot) into the outputs."""
    ui = json.loads(path.read_text())
    notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert notes and "Queue" in notes[0]["widgets_values"][0] and notes[0]["inputs"] == []
    assert any("1 = transparent" in n["widgets_values"][0] for n in notes)
    api = wf.ui_to_api(ui, pack)
    assert all(n["class_type"] not in wf.NOTE_TYPES for n in api.values())
    by_type = {n["class_type"]: n for n in api.values()}
    first_encode = next(n for n in api.values() if n["class_type"] == "VeraEncode")["inputs"]
    assert api[first_encode["video"][0]]["class_type"] == "LoadVideo"
    save = by_type["VeraSaveLayers"]["inputs"]
    assert save["fps"] == 0.0 and api[save["vera_shot"][0]]["class_type"] == "VeraDecodeLayers"
    if "stack" in save:  # a layer stack: the shot's rate travels in the stack
        assert api[save["stack"][0]]["class_type"] == "VeraLayerStack"
    else:
        video = by_type["SaveVideo"]["inputs"]["video"]
        assert api[video[0]]["class_type"] == "VeraComposite" and video[1] == 2
    for node in ui["nodes"]:
        for model in node["properties"].get("models", []):
            assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith(model["name"])
            assert model["name"] in node["widgets_values"] and model["directory"] in ("vae", "text_encoders")
    if "wan13b" in path.name:
        listed = {m["name"] for n in ui["nodes"] for m in n["properties"].get("models", [])}
        assert listed == {"wan_2.1_vae.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"}


def test_registry_metadata_matches_what_manager_installs():
    """pyproject.toml (the Comfy Registry reads it) lists requirements.txt's lines, has a name
    without "ComfyUI", the classifiers and requires-comfyui; .comfyignore keeps dev files out."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert project["project"]["dependencies"] == [line for line in lines if line]
    assert "comfyui" not in project["project"]["name"].lower()
    assert "Operating System :: OS Independent" in project["project"]["classifiers"]
    assert project["tool"]["comfy"]["requires-comfyui"].startswith(">=")
    ignored = (ROOT / ".comfyignore").read_text().split()
    assert {"tests/", "bench/", "docs/"} <= set(ignored)

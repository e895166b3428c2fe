"""`python -m vera.client` against a local stub of ComfyUI's HTTP API: its error handling (and the file
download it ends with). The real server is exercised by tests/integration."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vera import client

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "api" / "vera_tiny_object_addition_api.json"


class Stub:
    """routes: (method, path without query) -> (status, body bytes or JSON-able). Records requests."""

    def __init__(self, routes):
        self.routes, self.requests = routes, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                stub.requests.append((method, self.path, body))
                status, payload = stub.routes.get((method, path), (404, {"error": "not found"}))
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stub():
    servers = []

    def make(routes):
        servers.append(Stub(routes))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def args(server, tmp_path, *extra):
    return client.build_parser().parse_args(["--server", server, "--workflow", str(WORKFLOW), "--out",
                                             str(tmp_path / "out"), "--timeout", "20", *extra])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_says_how_to_fix_it(tmp_path):
    with pytest.raises(client.ClientError, match="cannot reach ComfyUI at http://127.0.0.1:.*--server") as error:
        client.run(args(f"127.0.0.1:{free_port()}", tmp_path), log=lambda *_: None)
    assert error.value.exit_code == 3
    assert client.main(["--server", f"127.0.0.1:{free_port()}", "--workflow", str(WORKFLOW)]) == 3


def test_refused_workflow_lists_each_node_error(stub, tmp_path):
    refusal = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                         "details": ""},
               "node_errors": {"12": {"class_type": "VeraSampler", "dependent_outputs": ["22"], "errors": [
                   {"type": "value_bigger_than_max", "message": "Value 500 bigger than max of 200",
                    "details": "steps", "extra_info": {"input_name": "steps"}}]}}}
    server = stub({("POST", "/prompt"): (400, refusal)})
    with pytest.raises(client.ClientError) as error:
        client.run(args(server.url, tmp_path, "--steps", "500"), log=lambda *_: None)
    assert error.value.exit_code == 2
    assert "node 12 (VeraSampler) input 'steps': Value 500 bigger than max of 200" in str(error.value)
    sent = json.loads(next(body for method, path, body in server.requests if path == "/prompt"))
    assert sent["prompt"]["12"]["inputs"]["steps"] == 500 and sent["client_id"]


def test_set_reaches_the_context_windows_node_and_is_checked_as_the_library_checks_it(stub,
                                                                                     tmp_path):
    refusal = {"error": {"type": "prompt_outputs_failed_validation", "message": "refused",
                         "details": ""}, "node_errors": {}}
    server = stub({("POST", "/prompt"): (400, refusal)})
    long_shot = ["--workflow", str(ROOT / "workflows" / "api" / "vera_tiny_long_shot_api.json")]
    with pytest.raises(client.ClientError):
        client.run(args(server.url, tmp_path, *long_shot,
                        "--set", "Vera Context Windows.window=33",
                        "--set", "Vera Context Windows.window_overlap=12",
                        "--set", "Vera Context Windows.mode=off"), log=lambda *_: None)
    sent = json.loads(next(body for method, path, body in server.requests if path == "/prompt"))
    windows = next(n for n in sent["prompt"].values() if n["class_type"] == "VeraContextWindows")
    assert windows["inputs"] == dict(mode="off", window=33, window_overlap=12,
                                     window_fuse="linear", window_noise="freenoise")
    with pytest.raises(client.ClientError, match=r"window = 18: a context window must be 1 \+ 4k") \
            as error:
        client.run(args(server.url, tmp_path, *long_shot,
                        "--set", "Vera Context Windows.window=18"), log=lambda *_: None)
    assert error.value.exit_code == 2


def test_failed_run_names_the_node_and_the_exception(stub, tmp_path):
    history = {"p1": {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p1"}],
        ["execution_error", {"prompt_id": "p1", "node_id": "11", "node_type": "VeraEncode",
                             "exception_type": "ValueError", "exception_message": "source_frames: bad 10 frames"}]]},
        "outputs": {}}}
    server = stub({("POST", "/prompt"): (200, {"prompt_id": "p1", "number": 0, "node_errors": {}}),
                   ("GET", "/history/p1"): (200, history)})  # no websocket here: the client polls
    with pytest.raises(client.ClientError, match=r"node 11 \(VeraEncode\): ValueError: source_frames: bad 10 frames"):
        client.run(args(server.url, tmp_path), log=lambda *_: None)


def test_bad_answers_and_bad_requests_are_explained(stub, tmp_path):
    server = stub({("POST", "/prompt"): (200, b"<html>proxy login</html>"),
                   ("POST", "/upload/image"): (500, b"disk full")})
    with pytest.raises(client.ClientError, match="not JSON.*ComfyUI server"):
        client.run(args(server.url, tmp_path), log=lambda *_: None)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 10)
    with pytest.raises(client.ClientError, match="answered 500 to /upload/image: disk full"):
        client.run(args(server.url, tmp_path, "--input", str(clip)), log=lambda *_: None)
    with pytest.raises(client.ClientError, match="input file .*missing.mp4 does not exist"):
        client.run(args(server.url, tmp_path, "--input", str(tmp_path / "missing.mp4")), log=lambda *_: None)
    with pytest.raises(client.ClientError, match="no node titled 'Sampler'.*Vera Sampler"):
        client.run(args(server.url, tmp_path, "--set", "Sampler.steps=3"), log=lambda *_: None)
    with pytest.raises(client.ClientError, match="has no input 'stepz'"):
        client.run(args(server.url, tmp_path, "--set", "Vera Sampler.stepz=3"), log=lambda *_: None)
    with pytest.raises(client.ClientError, match="connected to another node"):
        client.run(args(server.url, tmp_path, "--set", "Vera Sampler.positive=1"), log=lambda *_: None)
    for setting, message in (("Vera Sampler.cfg=NaN", "cfg = nan: must be a finite number"),
                             ("Vera Sampler.steps=0", "steps = 0: must be a whole number"),
                             ("Vera Decode Layers.alpha_cutoff=2", "alpha_cutoff = 2: must be")):
        with pytest.raises(client.ClientError, match=message) as err:  # the library's own message
            client.run(args(server.url, tmp_path, "--set", setting), log=lambda *_: None)
        assert err.value.exit_code == 2
    ui_format = tmp_path / "ui.json"
    ui_format.write_text((ROOT / "workflows" / "vera_tiny_object_addition.json").read_text())
    with pytest.raises(client.ClientError, match="UI format; use the \\*_api.json"):
        client.load_workflow(ui_format)
    # only the first run reached /prompt: every later mistake is caught before anything is submitted
    assert sum(method == "POST" and path == "/prompt" for method, path, _ in server.requests) == 1


def test_successful_run_downloads_outputs_without_overwriting(stub, tmp_path):
    outputs = {"22": {"vera_files": [{"filename": "e_alpha.mp4", "subfolder": "vera/e_00001", "type": "output"}],
                      "vera_layers": [{"frames": []}]},
               "24": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]}}
    server = stub({("POST", "/prompt"): (200, {"prompt_id": "p2", "number": 0, "node_errors": {}}),
                   ("POST", "/upload/image"): (200, {"name": "clip.mp4", "subfolder": "vera", "type": "input"}),
                   ("GET", "/history/p2"): (200, {"p2": {"status": {"status_str": "success", "completed": True,
                                                                    "messages": []}, "outputs": outputs}}),
                   ("GET", "/view"): (200, b"video bytes")})
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 10)
    paths = client.run(args(server.url, tmp_path, "--input", str(clip), "--prompt", "add a blue square", "--seed", "9"),
                       log=lambda *_: None)
    assert paths == [tmp_path / "out" / "vera" / "e_00001" / "e_alpha.mp4"] and paths[0].read_bytes() == b"video bytes"
    sent = json.loads(next(body for method, path, body in server.requests if path == "/prompt"))["prompt"]
    assert sent["1"]["inputs"]["file"] == "vera/clip.mp4"
    assert sent["6"]["inputs"]["text"] == "add a blue square" and sent["12"]["inputs"]["seed"] == 9
    paths[0].write_bytes(b"edited by the artist")
    lines = []
    client.run(args(server.url, tmp_path), log=lines.append)
    assert paths[0].read_bytes() == b"edited by the artist"  # an existing file is never replaced
    assert lines[-1].startswith("downloaded 0 files") and "1 already in" in lines[-1]


def test_a_server_cannot_make_the_client_write_outside_its_folder(stub, tmp_path):
    outputs = {"22": {"vera_files": [{"filename": "evil.sh", "subfolder": "../../", "type": "output"}]}}
    server = stub({("POST", "/prompt"): (200, {"prompt_id": "p3", "number": 0, "node_errors": {}}),
                   ("GET", "/history/p3"): (200, {"p3": {"status": {"status_str": "success", "completed": True},
                                                         "outputs": outputs}}),
                   ("GET", "/view"): (200, b"#!/bin/sh")})
    with pytest.raises(client.ClientError, match="refusing to write 'evil.sh'"):
        client.run(args(server.url, tmp_path), log=lambda *_: None)
    assert not (tmp_path.parent / "evil.sh").exists()

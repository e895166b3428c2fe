"""Headless ComfyUI client: run a Vera API workflow on a running ComfyUI and download what it saved.

    python -m vera.client --workflow workflows/api/vera_tiny_object_addition_api.json \\
        --input clip.mp4 --prompt "add a large red circle moving from left to right" --seed 3 --out out/comfy

Steps: upload the input video (and mask) -> set them, the prompt, seed and any `--set` values in the
workflow -> POST /prompt -> follow progress over the websocket (or poll /history when the websocket
is unavailable) -> download every saved output file through /view. Nodes are found by the titles
our workflows give them ("Source video", "Positive prompt", "Negative prompt", "Vera Sampler", ...),
or by node id.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from . import VeraError
from .media.files import atomic_path
from .sampling.settings import FIELDS as SETTINGS_FIELDS
from .sampling.settings import SettingsError, check_prompt, check_value


class ClientError(VeraError, RuntimeError):
    """A failure the user can act on; the message says what happened and what to do."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ComfyClient:
    def __init__(self, server: str, timeout: float = 30.0):
        if "://" not in server:
            server = "http://" + server
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    # HTTP ---------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        request = urllib.request.Request(self.server + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise self._http_error(path, error.code, detail) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ClientError(f"cannot reach ComfyUI at {self.server} ({reason}); start it (python main.py --listen) "
                              "or pass --server HOST:PORT", exit_code=3) from None
        except (http.client.HTTPException, ValueError) as error:  # a server that is not HTTP
            raise ClientError(f"{self.server} did not answer {path} as an HTTP server would "
                              f"({type(error).__name__}: {error}); is --server a ComfyUI address?",
                              exit_code=3) from None

    def _http_error(self, path: str, code: int, detail: str) -> ClientError:
        if path == "/prompt" and code == 400:
            return ClientError("ComfyUI refused the workflow:\n" + format_prompt_errors(detail), exit_code=2)
        return ClientError(f"ComfyUI answered {code} to {path}: {detail[:500].strip() or '(no details)'}")

    def _json(self, method: str, path: str, payload: dict | None = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        raw = self._request(method, path, body, {"Content-Type": "application/json"} if body else None)
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ClientError(f"ComfyUI's answer to {path} is not JSON ({raw[:200]!r}); is {self.server} a "
                              "ComfyUI server?") from None

    def upload(self, path: Path, subfolder: str = "vera") -> str:
        """Upload a file into ComfyUI's input folder; returns the name to put in a loader node."""
        if not path.is_file():
            raise ClientError(f"input file {path} does not exist")
        boundary = uuid.uuid4().hex
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n{subfolder}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        raw = self._request("POST", "/upload/image", b"".join(parts),
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            answer = json.loads(raw)
            return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ClientError(f"unexpected answer to the upload of {path}: {raw[:200]!r}") from None

    def submit(self, workflow: dict, ui_workflow: dict | None = None) -> str:
        """Queue an API-format workflow; `ui_workflow` (its UI-format file) is sent along as the
        frontend does, so save nodes embed it in their files."""
        body = {"prompt": workflow, "client_id": self.client_id}
        if ui_workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": ui_workflow}}
        answer = self._json("POST", "/prompt", body)
        if answer.get("node_errors"):
            raise ClientError("ComfyUI refused the workflow:\n" + format_prompt_errors(json.dumps(answer)), 2)
        if "prompt_id" not in answer:
            raise ClientError(f"ComfyUI did not return a prompt id: {answer}")
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self._json("GET", f"/history/{prompt_id}").get(prompt_id)

    def download(self, item: dict, out: Path) -> tuple[Path, bool]:
        """Fetch one output file into `out` -> (path, whether it was downloaded now). A file already
        there is never overwritten (outputs are write-once on the server) and reported as such."""
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        target = (out / item.get("subfolder", "") / item["filename"]).resolve()
        if not target.is_relative_to(out.resolve()):
            raise ClientError(f"refusing to write {item['filename']!r} (subfolder {item.get('subfolder')!r}) outside {out}")
        if target.exists():
            return target, False
        data = self._request("GET", f"/view?{query}")
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        return target, True

    # progress -----------------------------------------------------------------------------------
    def wait(self, prompt_id: str, titles: dict[str, str], deadline: float, log=print, socket=None) -> dict:
        """Follow the run until it ends; returns its history entry (raises ClientError on failure).

        socket: from `open_websocket`, opened before `submit` so no message is missed; without one the
        history is polled."""
        try:
            while time.time() < deadline:
                message = None
                if socket is not None:
                    message = _receive(socket, min(2.0, max(0.1, deadline - time.time())))
                    if message is not None:
                        _report(message, prompt_id, titles, log)
                else:
                    time.sleep(1.0)
                if message is not None and not _is_end(message, prompt_id):
                    continue  # a progress message: no need to ask for the history yet
                entry = self.history(prompt_id)
                if entry is not None and _finished(entry):
                    return _check_status(entry)
                if message is not None and socket is not None:  # ended, history not written yet: poll
                    socket.close()
                    socket = None
        finally:
            if socket is not None:
                socket.close()
        raise ClientError(f"no result within the time limit; the run may still be going (prompt {prompt_id})", 4)

    def open_websocket(self, log=print):
        try:
            import websocket
        except ImportError:
            log("note: websocket-client is not installed; polling /history for the result")
            return None
        url = self.server.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        try:
            return websocket.create_connection(url, timeout=self.timeout)
        except Exception as error:  # a proxy without websockets: the run still works by polling
            log(f"note: no websocket at {url} ({error}); polling /history for the result")
            return None


def _receive(socket, timeout: float) -> dict | None:
    import websocket

    socket.settimeout(timeout)
    try:
        raw = socket.recv()
    except websocket.WebSocketTimeoutException:
        return None
    except websocket.WebSocketConnectionClosedException:
        raise ClientError("ComfyUI closed the websocket during the run (did the server stop?)", 3) from None
    if isinstance(raw, bytes):  # binary preview images
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def _is_end(message: dict | None, prompt_id: str) -> bool:
    if not message or message.get("data", {}).get("prompt_id") != prompt_id:
        return False
    kind = message.get("type")
    return kind in ("execution_success", "execution_error", "execution_interrupted") or (
        kind == "executing" and message["data"].get("node") is None)


def _report(message: dict, prompt_id: str, titles: dict[str, str], log) -> None:
    data = message.get("data", {})
    if data.get("prompt_id") not in (None, prompt_id):
        return
    kind = message.get("type")
    if kind == "executing" and data.get("node") is not None:
        log(f"running {titles.get(str(data['node']), data['node'])}")
    elif kind == "progress":
        node = titles.get(str(data.get("node")), data.get("node"))
        log(f"  {node}: step {data.get('value')}/{data.get('max')}")


def _finished(entry: dict) -> bool:
    status = entry.get("status") or {}
    return bool(status.get("completed")) or status.get("status_str") in ("success", "error")


def _check_status(entry: dict) -> dict:
    status = entry.get("status", {})
    if status.get("status_str") == "success" or (status.get("completed") and status.get("status_str") != "error"):
        return entry
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            raise ClientError(f"the run failed in node {data.get('node_id')} ({data.get('node_type')}): "
                              f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}")
        if kind == "execution_interrupted":
            raise ClientError("the run was cancelled in ComfyUI", exit_code=130)
    raise ClientError(f"the run did not succeed: {json.dumps(status)[:500]}")


def format_prompt_errors(text: str) -> str:
    """ComfyUI's 400 answer to /prompt -> one readable line per problem."""
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return text[:500]
    lines = []
    error = answer.get("error")
    if isinstance(error, dict) and error.get("message"):
        lines.append(f"  {error['message']}" + (f": {error['details']}" if error.get("details") else ""))
    for node_id, info in (answer.get("node_errors") or {}).items():
        for item in info.get("errors", []):
            name = item.get("extra_info", {}).get("input_name")
            where = f"node {node_id} ({info.get('class_type')})" + (f" input {name!r}" if name else "")
            lines.append(f"  {where}: {item.get('message')}: {item.get('details', '')}".rstrip(": "))
    return "\n".join(lines) or text[:500]


# workflow edits ---------------------------------------------------------------------------------
def load_workflow(path: Path) -> dict:
    try:
        workflow = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise ClientError(f"workflow {path} does not exist (or is a folder)", 2) from None
    except UnicodeDecodeError as error:
        raise ClientError(f"workflow {path} is not UTF-8 text (byte {error.start}); give the JSON "
                          "file ComfyUI exported", 2) from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ClientError(f"workflow {path} is not valid JSON ({error})", 2) from None
    if not isinstance(workflow, dict):
        raise ClientError(f"workflow {path} is a JSON {type(workflow).__name__}; an API-format "
                          "workflow is an object of id -> {class_type, inputs}", 2)
    if "nodes" in workflow and "links" in workflow:
        raise ClientError(f"workflow {path} is in UI format; use the *_api.json file (or Workflow > Export (API) "
                          "in ComfyUI)")
    if not workflow or not all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        raise ClientError(f"workflow {path} is not an API-format workflow "
                          "(id -> {class_type, inputs})", 2)
    return workflow


def find_node(workflow: dict, key: str) -> str:
    """A node id from an id or a title (as shown in ComfyUI)."""
    if key in workflow:
        return key
    matches = [i for i, n in workflow.items() if n.get("_meta", {}).get("title") == key]
    if len(matches) == 1:
        return matches[0]
    titles = sorted(n.get("_meta", {}).get("title", "") for n in workflow.values())
    problem = "no node" if not matches else f"{len(matches)} nodes"
    raise ClientError(f"{problem} titled {key!r} in the workflow; use a node id or one of: {', '.join(titles)}")


def set_input(workflow: dict, node_key: str, name: str, value) -> None:
    node = workflow[find_node(workflow, node_key)]
    if name not in node["inputs"]:
        raise ClientError(f"node {node_key!r} ({node['class_type']}) has no input {name!r}; it has "
                          f"{', '.join(sorted(node['inputs']))}")
    if isinstance(node["inputs"][name], list):
        raise ClientError(f"input {name!r} of node {node_key!r} is connected to another node; edit the workflow instead")
    if node["class_type"].startswith("Vera") and name in SETTINGS_FIELDS:
        try:  # the same check (and message) as the CLI and the nodes
            value = check_value(name, value)
        except SettingsError as error:
            raise ClientError(f"node {node_key!r}: {error}", exit_code=2) from None
    node["inputs"][name] = value


def parse_set(text: str) -> tuple[str, str, object]:
    """'Vera Sampler.steps=10' -> ("Vera Sampler", "steps", 10); the value is JSON when it parses, else text."""
    target, sep, raw = text.partition("=")
    node, dot, name = target.rpartition(".")
    if not sep or not dot or not node or not name:
        raise ClientError(f"--set {text!r}: use NODE.INPUT=VALUE, e.g. --set 'Vera Sampler.steps=10'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node, name, value


def output_files(entry: dict) -> list[dict]:
    """Every saved file (type "output") a run's nodes reported, each once (a node may list a file
    both as its preview and among its files)."""
    items, seen = [], set()
    for node_output in entry.get("outputs", {}).values():
        for values in node_output.values():
            for v in values if isinstance(values, list) else []:
                if isinstance(v, dict) and v.get("type") == "output" and "filename" in v:
                    key = (v.get("subfolder", ""), v["filename"])
                    if key not in seen:
                        seen.add(key)
                        items.append(v)
    return items


def run(args, log=print) -> list[Path]:
    workflow = load_workflow(args.workflow)
    client = ComfyClient(args.server, timeout=args.http_timeout)
    if args.input:
        set_input(workflow, args.input_node, _loader_input(workflow, args.input_node), client.upload(Path(args.input)))
    if args.mask:
        set_input(workflow, args.mask_node, _loader_input(workflow, args.mask_node), client.upload(Path(args.mask)))
    if args.prompt is not None:
        try:
            check_prompt(args.prompt, args.allow_empty_prompt, "--prompt")
        except SettingsError as error:
            raise ClientError(str(error), 2) from None
        set_input(workflow, "Positive prompt", "text", args.prompt)
    if args.negative is not None:
        set_input(workflow, "Negative prompt", "text", args.negative)
    for name in ("seed", "steps", "cfg"):
        if getattr(args, name) is not None:
            set_input(workflow, "Vera Sampler", name, getattr(args, name))
    for text in args.set or []:
        set_input(workflow, *parse_set(text))
    titles = {i: n.get("_meta", {}).get("title", n["class_type"]) for i, n in workflow.items()}
    socket = client.open_websocket(log)
    try:
        prompt_id = client.submit(workflow)
    except ClientError:
        if socket is not None:
            socket.close()
        raise
    log(f"queued prompt {prompt_id} on {client.server}")
    entry = client.wait(prompt_id, titles, time.time() + args.timeout, log, socket)
    items = output_files(entry)
    if not items:
        raise ClientError("the run finished but saved no files; does the workflow end in Vera Save Layers?")
    out = Path(args.out)
    fetched = [client.download(item, out) for item in items]
    paths = [path for path, _ in fetched]
    kept = sum(not new for _, new in fetched)
    note = f" ({kept} already in {out} were kept, not downloaded again)" if kept else ""
    log(f"downloaded {len(paths) - kept} files into {out}{note}")
    return paths


def _loader_input(workflow: dict, node_key: str) -> str:
    node = workflow[find_node(workflow, node_key)]
    for name in ("file", "video", "image"):
        if name in node["inputs"]:
            return name
    raise ClientError(f"node {node_key!r} ({node['class_type']}) is not a file loader")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vera.client", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="127.0.0.1:8188", help="ComfyUI address (default 127.0.0.1:8188)")
    p.add_argument("--workflow", type=Path, required=True, help="an API-format workflow (workflows/api/*_api.json)")
    p.add_argument("--input", help="source video to upload and use")
    p.add_argument("--input-node", default="Source video", help="title or id of the loader it goes into")
    p.add_argument("--mask", help="mask image to upload (background change with a LoadImageMask node)")
    p.add_argument("--mask-node", default="Edit region (white = may change)", help="title or id of the mask loader")
    p.add_argument("--prompt", help="the edit instruction (node titled 'Positive prompt')")
    p.add_argument("--negative", help="the negative prompt (node titled 'Negative prompt')")
    p.add_argument("--allow-empty-prompt", action="store_true",
                   help="send a blank --prompt on purpose")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float)
    p.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="any other input, by title or id")
    p.add_argument("--out", default="out/comfy", help="folder to download the outputs into")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run (default 3600)")
    p.add_argument("--http-timeout", type=float, default=60, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: stopped following the run (it may still be running in ComfyUI; its "
              "Cancel button stops it)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

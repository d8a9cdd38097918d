"""sundae-check-comfyui against a stand-in ComfyUI: the same HTTP endpoints, answered by our executor."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sundae_core.graph import run_workflow
from sundae_core.graph.registry import default_registry
from trainers.evaluation.comfyui_check import main

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


class FakeComfy(BaseHTTPRequestHandler):
    """/object_info, /upload/image, /prompt, /history/<id> and /view, as ComfyUI answers them;
    a prompt runs at once with sundae-run's executor in `root` (input/, output/)."""

    root: Path
    history: dict
    tamper = False  # brighten every saved picture: the check must notice

    def log_message(self, *args):
        pass

    def _reply(self, body: bytes, kind: str = "application/json", code: int = 200):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/object_info":
            return self._reply(json.dumps(default_registry().definitions()).encode())
        if url.path.startswith("/history/"):
            prompt_id = url.path.rsplit("/", 1)[1]
            return self._reply(json.dumps({k: v for k, v in self.history.items() if k == prompt_id}).encode())
        if url.path == "/view":
            q = dict(urllib.parse.parse_qsl(url.query))
            folder = self.root / "output" / ("temp" if q["type"] == "temp" else "") / q["subfolder"]
            return self._reply((folder / q["filename"]).read_bytes(), "image/png")
        self._reply(b"{}", code=404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/upload/image":
            name = body.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
            data = body.split(b"\r\n\r\n", 2)[2].rsplit(b"\r\n--", 1)[0]  # the second part's payload
            (self.root / "input").mkdir(exist_ok=True)
            (self.root / "input" / name).write_bytes(data)
            return self._reply(json.dumps({"name": name}).encode())
        prompt = json.loads(body)["prompt"]
        result = run_workflow(prompt, input_dir=self.root / "input", output_dir=self.root / "output", progress=False)
        if self.tamper:
            for file in result.files:
                pixels = np.asarray(Image.open(file).convert("RGB")).astype(np.int16)
                Image.fromarray(np.clip(pixels + 3, 0, 255).astype(np.uint8)).save(file)
        prompt_id = f"p{len(self.history)}"
        self.history[prompt_id] = {"status": {"status_str": "success", "messages": []}, "outputs": result.ui}
        self._reply(json.dumps({"prompt_id": prompt_id, "number": 0, "node_errors": {}}).encode())


@pytest.fixture
def server(tmp_path, tiny_models):
    handler = type("Handler", (FakeComfy,), {"root": tmp_path / "comfy", "history": {}})
    (tmp_path / "comfy").mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_workflow_that_runs_alike_in_both_agrees(server, tmp_path, capsys):
    handler, url = server
    out = tmp_path / "check"
    code = main([str(WORKFLOWS / "inpaint_1024.json"), "--url", url, "--out", str(out)])
    assert code == 0, capsys.readouterr()
    [check] = json.loads((out / "comfyui_check.json").read_text())["checks"]
    assert check["status"] == "agree" and check["images"] == 1 and check["max_difference"] == 0
    assert (tmp_path / "comfy" / "input" / "inpaint_1024.png").read_bytes() == \
        (WORKFLOWS / "input" / "inpaint_1024.png").read_bytes()  # uploaded from the workflow's input folder


def test_pictures_that_differ_fail_the_check_and_say_by_how_much(server, tmp_path, capsys):
    handler, url = server
    handler.tamper = True
    code = main([str(WORKFLOWS / "unconditional_sampling.json"), "--url", url, "--out", str(tmp_path / "c")])
    assert code == 1
    assert "a pixel differs by 3 of 255 (tolerance 1)" in capsys.readouterr().out


def test_no_server_is_one_clear_line(tmp_path, capsys):
    code = main(["--url", "http://127.0.0.1:9", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no ComfyUI answers at http://127.0.0.1:9") and "Traceback" not in err

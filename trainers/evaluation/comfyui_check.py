"""`sundae-check-comfyui`: the shipped workflows on a running ComfyUI, against `sundae-run`.

    python main.py --cpu          # in your ComfyUI, with this pack in custom_nodes/
    sundae-check-comfyui --url http://127.0.0.1:8188 --out runs/comfyui_check

For each workflow (default: every file in workflows/): upload the images its LoadImage nodes name
(from the workflow's input folder), build the API prompt with sundae-run's own converter from the
server's /object_info (so the node definitions are ComfyUI's), queue it, wait for the result,
fetch every image it saved, run the same workflow with sundae-run, and compare the two sets of
pictures node by node, pixel by pixel. ComfyUI's SaveImage truncates to 8 bits where sundae-run
rounds (so that load -> save is lossless): a largest difference of 1 (of 255) is agreement, the
default --tolerance. Session 25 ran it against ComfyUI 0.8.0 (docs/architecture.md, "Checked
against a real ComfyUI").

Outputs: one line per workflow and --out/comfyui_check.json. Exit 0 when every workflow ran in
both and agreed, 1 otherwise. It talks only to the server --url names and downloads nothing else.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.errors import InputError
from sundae_core.graph import load_workflow, run_workflow
from sundae_core.graph.execute import default_input_dir

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
IMAGE_LOADERS = ("LoadImage", "LoadImageMask")


class ComfyServer:
    """The few endpoints of ComfyUI's HTTP API this check uses."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=self.timeout) as reply:
            return reply.read()

    def post(self, path: str, body: bytes, content_type: str) -> Any:
        request = urllib.request.Request(self.url + path, body, {"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as err:  # /prompt answers 400 with the validation errors
            text = err.read().decode("utf-8", "replace")
            raise InputError(f"ComfyUI refused {path} ({err.code}): {text[:2000]}") from None

    def object_info(self) -> dict:
        return json.loads(self.get("/object_info"))

    def upload_image(self, path: Path) -> None:
        """POST /upload/image (multipart), overwriting a file of the same name in ComfyUI's input/."""
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
                 (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                  "Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + b"\r\n",
                 f"--{boundary}--\r\n".encode()]
        self.post("/upload/image", b"".join(parts), f"multipart/form-data; boundary={boundary}")

    def queue(self, prompt: dict) -> str:
        body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
        return self.post("/prompt", body, "application/json")["prompt_id"]

    def wait(self, prompt_id: str, timeout: float) -> dict:
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            history = json.loads(self.get(f"/history/{prompt_id}"))
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.5)
        raise InputError(f"ComfyUI did not finish prompt {prompt_id} within {timeout:.0f} s")

    def image(self, entry: dict) -> np.ndarray:
        query = urllib.parse.urlencode({k: entry.get(k, "") for k in ("filename", "subfolder", "type")})
        with Image.open(io.BytesIO(self.get(f"/view?{query}"))) as picture:
            return np.asarray(picture.convert("RGB"))


@dataclass
class WorkflowCheck:
    workflow: str
    status: str = "not run"  # "agree", "differ", or what failed
    comfyui_seconds: float = 0.0
    images: int = 0
    max_difference: int = -1  # of any pixel channel, 0-255, over all images
    mean_difference: float = 0.0
    problems: list[str] = field(default_factory=list)


def saved_images(outputs: dict[str, dict], read) -> dict[tuple[str, int], np.ndarray]:
    """{(node id, index): RGB array} of every image an output node reported (ComfyUI's `ui` shape)."""
    return {(str(node), i): read(entry) for node, ui in outputs.items()
            for i, entry in enumerate((ui or {}).get("images", []))}


def compare(ours: dict[tuple[str, int], np.ndarray], theirs: dict[tuple[str, int], np.ndarray],
            check: WorkflowCheck, tolerance: int) -> None:
    if set(ours) != set(theirs):
        check.problems.append(f"images differ in kind: sundae-run saved {sorted(ours)}, ComfyUI {sorted(theirs)}")
    diffs = []
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key].astype(np.int16), theirs[key].astype(np.int16)
        if a.shape != b.shape:
            check.problems.append(f"node {key[0]} image {key[1]}: {a.shape[1]}x{a.shape[0]} here, "
                                  f"{b.shape[1]}x{b.shape[0]} in ComfyUI")
            continue
        diffs.append(np.abs(a - b))
    check.images = len(diffs)
    if diffs:
        check.max_difference = int(max(d.max() for d in diffs))
        check.mean_difference = float(np.mean([d.mean() for d in diffs]))
    if check.max_difference > tolerance:
        check.problems.append(f"a pixel differs by {check.max_difference} of 255 (tolerance {tolerance})")
    check.status = "agree" if not check.problems and diffs else "differ"


def check_workflow(server: ComfyServer, path: Path, out: Path, definitions: dict, tolerance: int,
                   timeout: float) -> WorkflowCheck:
    check = WorkflowCheck(path.name)
    prompt = load_workflow(path, definitions).prompt
    for node in prompt.values():
        name = node["inputs"].get("image") if node["class_type"] in IMAGE_LOADERS else None
        if isinstance(name, str):
            server.upload_image(default_input_dir(path) / name)
    began = time.monotonic()
    entry = server.wait(server.queue(prompt), timeout)
    check.comfyui_seconds = round(time.monotonic() - began, 2)
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        errors = [m[1].get("exception_message", "") for m in status.get("messages", []) if m[0] == "execution_error"]
        check.status, check.problems = "failed in ComfyUI", [one for one in errors if one] or [str(status)[:500]]
        return check
    theirs = saved_images(entry.get("outputs", {}), server.image)
    folders = {"output": out / path.stem, "temp": out / path.stem / "temp"}  # what each entry's "type" names
    result = run_workflow(path, output_dir=folders["output"], temp_dir=folders["temp"], progress=False)

    def read_ours(entry: dict) -> np.ndarray:
        with Image.open(folders[entry["type"]] / entry.get("subfolder", "") / entry["filename"]) as picture:
            return np.asarray(picture.convert("RGB"))

    ours = saved_images(result.ui, read_ours)
    compare(ours, theirs, check, tolerance)
    return check


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-check-comfyui", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("workflows", nargs="*", type=Path, help="workflow files (default: every file in workflows/)")
    p.add_argument("--url", default="http://127.0.0.1:8188", help="the running ComfyUI server")
    p.add_argument("--out", type=Path, default=Path("runs/comfyui_check"),
                   help="folder for sundae-run's pictures and comfyui_check.json")
    p.add_argument("--tolerance", type=int, default=1,
                   help="largest pixel difference (0-255) that still agrees (default 1: 8-bit rounding)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each prompt")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    server = ComfyServer(args.url)
    try:
        definitions = server.object_info()
    except (urllib.error.URLError, OSError) as err:
        raise InputError(f"no ComfyUI answers at {args.url} ({err}); start it (python main.py) "
                         "or pass --url") from None
    missing = [n for n in ("SundaeSample", "SundaeVQDecode") if n not in definitions]
    if missing:
        raise InputError(f"the ComfyUI at {args.url} has no {', '.join(missing)} node: install this pack in its "
                         "custom_nodes/ folder and restart it")
    checks = []
    for path in args.workflows or sorted(WORKFLOWS.glob("*.json")):
        check = check_workflow(server, path, args.out, definitions, args.tolerance, args.timeout)
        checks.append(check)
        print(f"{check.workflow}: {check.status}; {check.images} image(s), ComfyUI {check.comfyui_seconds} s, "
              f"largest difference {check.max_difference} of 255" + "".join(f"\n  {p}" for p in check.problems))
    write_json_report(args.out / "comfyui_check.json", {"url": args.url, "checks": [asdict(c) for c in checks]})
    return 0 if all(c.status == "agree" for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

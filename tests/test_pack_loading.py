"""The pack loads the way ComfyUI loads it and registers every node and its model folders.

ComfyUI executes `<pack>/__init__.py` by file path as a package named after the folder's path,
with the folder not on sys.path and its own module `nodes` already imported. The check runs in a
fresh interpreter started with -S, so the editable install's import hook (a .pth file) is not
active: `sundae_core` must become importable through the folder the pack appends to sys.path.
"""

import json
import site
import subprocess
import sys
from pathlib import Path

from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import DEFAULT_DIR, save_model
from sundae_nodes import NODE_CLASS_MAPPINGS

REPO = Path(__file__).resolve().parents[1]

LOAD_LIKE_COMFYUI = r"""
import importlib.util, json, sys, types
repo, site_dirs, models_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path.extend(site_dirs)  # third-party packages, but no .pth hooks: the project is not "installed"
before = importlib.util.find_spec("sundae_core") is not None

foreign = types.ModuleType("nodes")  # ComfyUI's own top-level `nodes`
sys.modules["nodes"] = foreign
folder_paths = types.ModuleType("folder_paths")
folder_paths.models_dir, registered = models_dir, {}
folder_paths.add_model_folder_path = lambda name, path, is_default=False: registered.setdefault(name, []).append(path)
folder_paths.get_folder_paths = lambda name: list(registered[name])
sys.modules["folder_paths"] = folder_paths

path_before = list(sys.path)
name = repo.replace(".", "_x_")  # how ComfyUI names a pack module
spec = importlib.util.spec_from_file_location(name, repo + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)

import torch
mappings = module.NODE_CLASS_MAPPINGS
print(json.dumps({
    "found_before": before,
    "nodes": sorted(mappings),
    "display_names": sorted(module.NODE_DISPLAY_NAME_MAPPINGS),
    "node_modules": sorted({cls.__module__ for cls in mappings.values()}),
    "foreign_nodes_intact": sys.modules["nodes"] is foreign and not hasattr(foreign, "NODE_CLASS_MAPPINGS"),
    "appended": sys.path[len(path_before):], "prefix_kept": sys.path[:len(path_before)] == path_before,
    "sundae_core_file": sys.modules["sundae_core"].__file__,
    "sundae_folders": registered.get("sundae"),
    "prior_choices": mappings["SundaePriorLoader"].INPUT_TYPES()["required"]["prior_name"][0],
    "comfy_imported": [m for m in sys.modules if m.split(".")[0] == "comfy"],
    "cuda_initialized": torch.cuda.is_initialized(),
}))
"""


def test_pack_loads_like_comfyui_loads_it(tmp_path):
    models = tmp_path / "models"
    save_model(models / "sundae" / "mine.safetensors",
               HourglassTransformer(HourglassConfig(vocab_size=8, dim=16, heads=1, depth=(0, 1, 0), shorten=4)))
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    done = subprocess.run([sys.executable, "-S", "-c", LOAD_LIKE_COMFYUI, str(REPO), json.dumps(site_dirs),
                           str(models)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["nodes"] == report["display_names"] == sorted(NODE_CLASS_MAPPINGS)
    assert all(m.startswith(str(REPO).replace(".", "_x_") + ".nodes.") for m in report["node_modules"])
    assert report["foreign_nodes_intact"]
    assert report["prefix_kept"] and report["appended"] == [str(REPO)]  # appended, never inserted
    if not report["found_before"]:  # editable install: sundae_core came through the appended folder
        assert report["sundae_core_file"] == str(REPO / "sundae_core" / "__init__.py")
    assert report["sundae_folders"][0] == str(models / "sundae")
    assert report["sundae_folders"][-1] == str(DEFAULT_DIR)
    assert report["prior_choices"][:2] == ["default", "mine.safetensors"]  # then any embedded prior
    assert report["comfy_imported"] == [] and not report["cuda_initialized"]

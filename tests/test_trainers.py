"""Training CLIs end to end on tiny models: VQ-GAN run + resume, a SIGKILLed run that resumes,
a class-conditional prior run, and 2-process torchrun runs that keep the ranks' weights equal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sundae_core.checkpoint import load_checkpoint, read_metadata
from sundae_core.config import HourglassConfig, VQGANConfig, from_dict
from sundae_core.errors import InputError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior, load_vqgan
from sundae_core.vqgan import VQGAN
from trainers.training import distributed, prior_step, train_prior, train_vqgan
from trainers.training.train_vqgan import VQTrainConfig
from trainers.training.discriminator import DiscriminatorConfig, PatchDiscriminator
from trainers.training.distributed import weights_digest
from trainers.data.image_data import DataConfig, ImageSet, is_validation

REPO = Path(__file__).resolve().parents[1]
VAL_FRACTION = 0.25

VQGAN_CONFIG = {
    "model": {"resolution": 32, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
              "z_channels": 4, "embed_dim": 4, "n_embed": 16},
    "data": {"resolution": 32, "crop": 32, "cache_size": 32, "val_fraction": VAL_FRACTION},
    "train": {"steps": 4, "batch_size": 2, "disc_start": 2, "lpips_net": "alex", "disc_channels": 8,
              "disc_layers": 2, "log_every": 1, "sample_every": 1000, "ckpt_every": 2, "val_images": 4,
              "bf16": False},
}

PRIOR_SETTINGS = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, 1, 1]",
                  "train.batch_size=8", "train.warmup=1", "train.log_every=1", "train.val_every=1000",
                  "train.val_batches=1", "train.sample_every=1000", "train.sample_steps=2", "train.bf16=false"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    return env


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _train_steps(run_dir: Path, key: str) -> list[int]:
    return [row["step"] for row in _log(run_dir) if key in row]


def _tmp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """12 small random images (some RGBA, some not square), 9 train + 3 validation by name hash."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    train, val, i = 0, 0, 0
    while train + val < 12:
        name = f"img{i:03d}.png"
        i += 1
        if is_validation(Path(name), VAL_FRACTION):
            if val == 3:
                continue
            val += 1
        elif train == 9:
            continue
        else:
            train += 1
        h, w = (40, 40) if i % 3 else (36, 48)
        mode, channels = ("RGBA", 4) if i % 4 == 0 else ("RGB", 3)
        Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode).save(root / name)
    return root


@pytest.fixture
def vqgan_config(tmp_path, images) -> Path:
    data = {**VQGAN_CONFIG, "data": {**VQGAN_CONFIG["data"], "path": str(images)}}
    path = tmp_path / "vqgan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_vqgan_training_run_and_resume(tmp_path, vqgan_config, capsys):
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress"]
    assert train_vqgan.main(command) == 0
    assert "model written to" in capsys.readouterr().out
    assert read_metadata(run / "state.safetensors")["step"] == "4"
    first = load_vqgan(run / "model.safetensors")
    assert first.config == from_dict(VQGANConfig, VQGAN_CONFIG["model"])
    rows = _log(run)
    gan = {row["step"]: row["gan_weight"] for row in rows if "gan_weight" in row}
    assert gan[1] == gan[2] == 0 and gan[3] > 0 and gan[4] > 0  # the adversarial terms switch on at disc_start
    assert any("val_psnr" in row and "val_lpips" in row for row in rows)
    assert (run / "samples" / "recon_000004.png").is_file()

    # the same command with more steps continues from the saved step
    assert train_vqgan.main(command + ["--set", "train.steps=6"]) == 0
    assert _train_steps(run, "l1") == [1, 2, 3, 4, 5, 6]
    assert read_metadata(run / "state.safetensors")["step"] == "6"
    second = load_vqgan(run / "model.safetensors")
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert _tmp_files(run) == []
    # a different config in an existing run folder is refused in one line
    other = tmp_path / "other.yaml"
    other.write_text(vqgan_config.read_text().replace("n_embed: 16", "n_embed: 32"))
    assert train_vqgan.main(["--config", str(other), "--run-dir", str(run), "--no-progress"]) == 1
    assert "another config" in capsys.readouterr().err


def test_the_discriminator_warms_up_before_the_generator_hears_it(tmp_path, vqgan_config):
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
               "--set", "train.disc_start=1", "--set", "train.disc_warmup=2", "--set", "train.steps=5"]
    assert train_vqgan.main(command) == 0
    rows = {row["step"]: row for row in _log(run) if "d_loss" in row}
    assert rows[1]["d_loss"] == 0 and rows[1]["gan_weight"] == 0  # before disc_start: neither
    assert rows[2]["d_loss"] != 0 and rows[3]["d_loss"] != 0  # steps 1, 2: the discriminator alone
    assert rows[2]["gan_weight"] == rows[3]["gan_weight"] == 0
    assert rows[4]["gan_weight"] > 0 and rows[5]["gan_weight"] > 0  # from disc_start + disc_warmup

    def rates() -> dict:
        groups = json.loads(read_metadata(run / "state.safetensors")["param_groups"])
        return {name: [g["lr"] for g in groups[name]] for name in ("ae", "disc")}

    lr = VQTrainConfig().lr
    assert rates() == {"ae": [lr], "disc": [lr]}  # disc_lr 0: the discriminator at train.lr
    # resumed with a discriminator rate of its own (two time scales); the generator's is unchanged
    assert train_vqgan.main(command + ["--set", "train.steps=6", "--set", "train.disc_lr=0.001"]) == 0
    assert rates() == {"ae": [lr], "disc": [0.001]}


def test_only_the_main_rank_logs_dead_code_restarts(tmp_path, vqgan_config, monkeypatch):
    command = lambda run: ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
                           *_sets(["train.steps=2", "train.restart_dead_codes_every=1"])]
    assert train_vqgan.main(command(tmp_path / "main")) == 0
    assert _train_steps(tmp_path / "main", "restarted_codes") == [1, 2]
    # a non-main rank (as under torchrun) restarts its codes in step but writes no row at all
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    assert train_vqgan.main(command(tmp_path / "rank1")) == 0
    assert not (tmp_path / "rank1" / "log.jsonl").exists()


def test_resuming_with_a_frozen_encoder_trains_the_decoder_only(tmp_path, vqgan_config):
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress"]
    assert train_vqgan.main(command) == 0
    before = load_vqgan(run / "model.safetensors").state_dict()
    assert train_vqgan.main(command + ["--set", "train.steps=6", "--set", "train.freeze_encoder=true"]) == 0
    after = load_vqgan(run / "model.safetensors").state_dict()
    fixed = [k for k in before if k.startswith(("encoder.", "quant_conv.", "quantize."))]
    trained = [k for k in before if k.startswith("decoder.")]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)  # tokens stay valid
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_a_weight_average_turned_on_at_resume_starts_there_and_is_the_model_written(tmp_path, vqgan_config):
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
               "--set", "train.freeze_encoder=true", "--set", "train.ckpt_every=1", "--set", "train.ema_decay=0.99"]

    def trained_and_written() -> tuple[dict, dict]:
        state = load_checkpoint(run / "state.safetensors").tensors
        trained = {k[len("module/model/"):]: v for k, v in state.items() if k.startswith("module/model/")}
        return trained, load_vqgan(run / "model.safetensors").state_dict()

    assert train_vqgan.main(command[:-2]) == 0  # 4 steps, no average
    at_resume = load_vqgan(run / "model.safetensors").state_dict()
    assert train_vqgan.main(command + ["--set", "train.steps=6"]) == 0  # the average from step 4's weights
    trained, written = trained_and_written()
    decoder = [k for k in written if k.startswith("decoder.") and written[k].is_floating_point()]
    moved = lambda a, b: max((a[k] - b[k]).abs().max().item() for k in decoder)
    assert moved(written, trained) > 0 and moved(written, at_resume) > 0  # an average of both
    fixed = [k for k in written if k.startswith(("encoder.", "quant_conv.", "quantize."))]
    assert fixed and all(torch.equal(written[k], at_resume[k]) for k in fixed)  # the tokens stay valid
    # resumed again, the average goes on from the state's: one update, decay min(0.99, 7 / 16)
    assert train_vqgan.main(command + ["--set", "train.steps=7"]) == 0
    trained7, written7 = trained_and_written()
    d = 7 / 16
    for k in decoder:
        torch.testing.assert_close(written7[k], d * written[k] + (1 - d) * trained7[k])


def test_a_sigkilled_vqgan_run_resumes_from_its_last_checkpoint(tmp_path, vqgan_config):
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
               "--set", "train.ckpt_every=1"]
    proc = subprocess.Popen([sys.executable, "-m", "trainers.training.train_vqgan", *command,
                             "--set", "train.steps=1000"],
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        # state is written before model: wait for both, or the kill can land between them
        while not ((run / "state.safetensors").exists() and (run / "model.safetensors").exists()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # whatever the moment of the kill, the files on disk are complete
    step = int(read_metadata(run / "state.safetensors")["step"])
    assert 1 <= step < 1000
    load_vqgan(run / "model.safetensors")
    # what a kill during a save leaves: atomic_write's temporary (made explicit, the kill's timing
    # is up to the scheduler)
    (run / ".state.safetensors.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    assert train_vqgan.main(command + ["--set", f"train.steps={step + 2}"]) == 0
    assert read_metadata(run / "state.safetensors")["step"] == str(step + 2)
    steps = _train_steps(run, "l1")
    assert steps[-2:] == [step + 1, step + 2]
    assert _tmp_files(run) == []


def test_prior_training_with_labels_label_dropout_and_resume(tmp_path, latents, monkeypatch):
    data = latents(num_classes=3, decoder="pixels")
    run = tmp_path / "prior"
    seen = []
    real = prior_step.unrolled_loss

    def spy(logits_fn, tokens, vocab_size, **kw):
        if kw["labels"] is not None:
            seen.append(kw["labels"].clone())
        return real(logits_fn, tokens, vocab_size, **kw)

    monkeypatch.setattr(prior_step, "unrolled_loss", spy)  # the training step's loss (not validation's)
    command = ["--run-dir", str(run), "--no-progress",
               *_sets(PRIOR_SETTINGS + [f"data.path={data}", "model.num_classes=3", "train.label_dropout=0.5"])]
    assert train_prior.main(command + _sets(["train.steps=3"])) == 0
    labels = torch.cat(seen[:3])  # the three training batches
    assert labels.numel() == 24 and (labels == 3).any() and (labels < 3).any()  # some dropped to null
    assert int(labels.max()) <= 3 and int(labels.min()) >= 0
    model = load_prior(run / "model.safetensors")
    assert model.config.num_classes == 3 and model.null_label == 3
    rows = _log(run)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert all(len([k for k in r if k.startswith("loss_step")]) == 2 for r in rows if "loss" in r)
    assert any("val_loss" in r for r in rows)
    assert all(0 <= r["val_hole_top1"] <= 1 for r in rows if "val_loss" in r)  # beside every held-out loss
    # the sample-collapse alarm beside it, and what it compares with, logged once
    assert all(1 <= r["val_sample_distinct"] <= 16 and 0 <= r["val_sample_background"] <= 1
               for r in rows if "val_loss" in r)
    assert len([r for r in rows if "data_distinct" in r and 0 < r["data_background"] <= 1]) == 1
    assert (run / "samples" / "samples_000003.png").is_file()
    assert train_prior.main(command + _sets(["train.steps=5"])) == 0
    assert [r["step"] for r in _log(run) if "loss" in r] == [1, 2, 3, 4, 5]
    # no labels at all: label_dropout is a no-op; wrong vocabulary is a one-line config error
    plain = latents()
    assert train_prior.main(["--run-dir", str(tmp_path / "plain"), "--no-progress",
                             *_sets(PRIOR_SETTINGS + [f"data.path={plain}", "train.steps=1"])]) == 0
    assert train_prior.main(["--run-dir", str(tmp_path / "bad"), "--no-progress",
                             *_sets(PRIOR_SETTINGS + [f"data.path={plain}", "model.vocab_size=32"])]) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(module: str, args: list[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", module, *args]
    proc = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _saved_modules(run: Path, build: dict) -> dict:
    """The modules of a run's state file, rebuilt: {name: module} in the trainer's order."""
    tensors = load_checkpoint(run / "state.safetensors", kind="train_state").tensors
    for name, module in build.items():
        prefix = f"module/{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return build


def _assert_ranks_agreed(run: Path, steps: int, modules: dict) -> None:
    rows = [r for r in _log(run) if "rank_weight_digests" in r]
    assert [r["step"] for r in rows][-1] == steps
    for row in rows:
        a, b = row["rank_weight_digests"]
        assert a == b, row  # both ranks hashed bit-identical weights
    # and the digest is the one of the weights rank 0 saved
    assert rows[-1]["rank_weight_digests"][0] == weights_digest(_saved_modules(run, modules))


@pytest.mark.torchrun
def test_torchrun_prior_keeps_identical_weights_on_both_ranks(tmp_path, latents):
    data = latents(num_classes=3)
    run = tmp_path / "prior"
    args = ["--run-dir", str(run), "--no-progress",
            *_sets(PRIOR_SETTINGS + [f"data.path={data}", "model.num_classes=3", "train.ckpt_every=2"])]
    config = HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3)
    modules = lambda: {"model": HourglassTransformer(config), "ema": HourglassTransformer(config)}
    _torchrun("trainers.training.train_prior", args + _sets(["train.steps=3"]))
    _assert_ranks_agreed(run, 3, modules())
    # resumed under torchrun, the ranks still agree
    _torchrun("trainers.training.train_prior", args + _sets(["train.steps=4"]))
    _assert_ranks_agreed(run, 4, modules())
    assert [r["step"] for r in _log(run) if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.torchrun
def test_torchrun_vqgan_keeps_identical_weights_on_both_ranks(tmp_path, vqgan_config):
    run = tmp_path / "vqgan"
    _torchrun("trainers.training.train_vqgan", ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
                                       *_sets(["train.steps=3", "train.disc_start=1",
                                               "train.restart_dead_codes_every=2"])])
    assert _train_steps(run, "restarted_codes") == [2]  # one row: only rank 0 writes it
    disc = DiscriminatorConfig(channels=8, layers=2)
    model = VQGAN(from_dict(VQGANConfig, VQGAN_CONFIG["model"]))
    _assert_ranks_agreed(run, 3, {"model": model, "disc": PatchDiscriminator(disc)})


def test_an_unconditional_prior_trains_on_a_labelled_set(tmp_path, latents, capsys):
    # the emoji and MNIST sets always carry labels; model.num_classes=0 trains without them
    # (eager and validated: an unconditional prior refuses a class input)
    data = latents(num_classes=3)
    run = tmp_path / "unconditional"
    assert train_prior.main(_prior_command(run, data, "train.steps=2", "train.val_every=2")) == 0, \
        capsys.readouterr().err
    assert load_prior(run / "model.safetensors").config.num_classes == 0
    assert any("val_loss" in r for r in _log(run))


def test_labels_past_the_models_classes_and_tokens_past_its_vocabulary_are_refused_at_load(tmp_path, latents, capsys):
    # with 3 classes, label 3 is the null class: a 4-class set would silently train it as "no class"
    # (and the compiled step does not check its inputs: a label past it is a GPU device assert)
    four = latents(num_classes=4, n=64)
    assert train_prior.main(_prior_command(tmp_path / "a", four, "model.num_classes=3", "train.steps=1")) == 1
    assert "class labels 0..3 but model.num_classes=3; set model.num_classes=4" in capsys.readouterr().err
    wide = latents(vocab_size=32)  # and a manifest that says 16
    manifest = json.loads((wide / "manifest.json").read_text())
    (wide / "manifest.json").write_text(json.dumps({**manifest, "vocab_size": 16}))
    assert train_prior.main(_prior_command(tmp_path / "b", wide, "train.steps=1")) == 1
    assert "holds token ids 0..31 but model.vocab_size=16" in capsys.readouterr().err


def test_a_resumed_run_trains_with_the_weight_decay_and_betas_it_is_given(tmp_path, latents, monkeypatch):
    data, run = latents(), tmp_path / "prior"
    assert train_prior.main(_prior_command(run, data, "train.steps=2", "train.weight_decay=0.01",
                                           "train.betas=[0.9, 0.99]")) == 0
    seen = []
    real = train_prior.train_step

    def spy(model, opt, *args, **kwargs):
        seen.append([(g["weight_decay"], tuple(g["betas"])) for g in opt.param_groups])
        return real(model, opt, *args, **kwargs)

    monkeypatch.setattr(train_prior, "train_step", spy)
    assert train_prior.main(_prior_command(run, data, "train.steps=3", "train.weight_decay=0.5",
                                           "train.betas=[0.5, 0.9]")) == 0
    assert seen == [[(0.5, (0.5, 0.9)), (0.0, (0.5, 0.9))]]  # matrices decay; norms, biases, embeddings not


def test_every_rank_but_the_first_draws_dropout_from_a_stream_of_its_own():
    def draws(rank, step=0):
        torch.manual_seed(5)  # every rank seeds alike, or resumes rank 0's saved state
        distributed.own_global_stream(5, rank, step)
        return torch.rand(4)
    assert torch.equal(draws(0), draws(0, step=300))  # one process: its stream as it always was
    streams = [draws(0)] + [draws(rank, step) for rank in (1, 2) for step in (0, 300)]
    assert len({tuple(s.tolist()) for s in streams}) == 5  # other ranks, and the same rank resumed, differ


def _prior_command(run: Path, data: Path, *settings: str) -> list[str]:
    return ["--run-dir", str(run), "--no-progress", *_sets(PRIOR_SETTINGS + [f"data.path={data}", *settings])]


def test_resume_drops_log_rows_past_the_checkpoint(tmp_path, latents):
    run = tmp_path / "prior"
    command = _prior_command(run, latents())
    assert train_prior.main(command + _sets(["train.steps=2"])) == 0
    # what a run killed after logging steps 3 and 4 but before checkpointing them leaves behind,
    # its last row torn by the kill
    with open(run / "log.jsonl", "a") as log:
        log.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + json.dumps({"step": 4, "loss": 9.0}) + "\n")
        log.write('{"step": 5, "lo')
    assert train_prior.main(command + _sets(["train.steps=4"])) == 0
    assert [r["step"] for r in _log(run) if "loss" in r] == [1, 2, 3, 4]
    assert all(r["loss"] != 9.0 for r in _log(run) if "loss" in r)


def test_trainer_io_faults_are_one_error_line_and_keep_the_last_checkpoint(tmp_path, latents, capsys, monkeypatch):
    import safetensors

    import sundae_core.checkpoint as checkpoint

    run = tmp_path / "prior"
    command = _prior_command(run, latents())
    assert train_prior.main(command + _sets(["train.steps=1"])) == 0
    saved = (run / "model.safetensors").read_bytes()
    capsys.readouterr()

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    assert train_prior.main(command + _sets(["train.steps=2"])) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"error: cannot write {run / 'state.safetensors'}: Error while serializing: "
                                        "IoError(Os { code: 28, kind: StorageFull }); any previous version of the "
                                        "file is unchanged"]
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    assert train_prior.main(command + _sets(["train.steps=2"])) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"error: cannot use {run / 'config.yaml'}: Permission denied (check the "
                                        "folder's permissions and free space)"]
    assert "Traceback" not in out + err
    assert (run / "model.safetensors").read_bytes() == saved and read_metadata(run / "state.safetensors")["step"] == "1"
    assert _tmp_files(run) == []


def test_dropout_on_the_cpu_warns_of_its_cost_once(tmp_path, latents, capsys):
    assert train_prior.main(_prior_command(tmp_path / "a", latents(), "train.steps=1", "model.dropout=0.2")) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "model.dropout=0.2 on the CPU" in line]
    assert len(warned) == 1 and "model.attention_dropout_at=output" in warned[0]
    assert train_prior.main(_prior_command(tmp_path / "b", latents(), "train.steps=1")) == 0
    assert "model.dropout" not in capsys.readouterr().err
    assert train_prior.main(_prior_command(tmp_path / "c", latents(), "train.steps=1", "model.dropout=0.2",
                                           "model.attention_dropout_at=output")) == 0
    assert "model.dropout" not in capsys.readouterr().err  # the fused kernel keeps working: nothing to warn of


def test_an_absurd_model_section_is_refused_before_training_starts(tmp_path, latents, capsys):
    command = _prior_command(tmp_path / "prior", latents(), "model.dim=10000000", "model.heads=10")
    assert train_prior.main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GiB of parameters, over the ceiling" in err[0] and "SUNDAE_MAX_MODEL_BYTES" in err[0]
    assert not (tmp_path / "prior").exists()


def test_training_images_are_checked_against_the_pixel_ceiling_and_16_bit_is_scaled(tmp_path, monkeypatch):
    from sundae_core.errors import InputError
    from trainers.data.image_data import load_rgb

    Image.fromarray(np.full((4, 6), 32896, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_rgb(tmp_path / "deep.png", 4)[0, 0].tolist() == [128, 128, 128]
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setenv("SUNDAE_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(InputError, match=r"300x200 \(width x height\) has 60,000 pixels, over the ceiling of 50,000"):
        load_rgb(tmp_path / "big.png", 4)


def test_a_deeply_nested_manifest_is_one_error_line(tmp_path, latents, capsys):
    data = latents()
    (data / "manifest.json").write_text("[" * 1000 + "]" * 1000)
    assert train_prior.main(_prior_command(tmp_path / "prior", data)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {data / 'manifest.json'}: not a readable manifest (nested deeper than 64 levels); "
                   "rebuild it with sundae-build-latents"]


def test_torchrun_uses_gloo_even_where_cuda_is_present(monkeypatch):
    """The trainers step on the CPU: nccl would refuse their tensors at the first all-reduce."""
    backends = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kw: backends.append(backend))
    assert distributed.setup() == (0, 1)  # the fake group never initialises
    assert backends == ["gloo"]


# What each rank runs: a collective, an optimiser (whose first construction imports torch._dynamo,
# which kept the process group alive past destroy_process_group), then the trainers' cleanup; gloo
# threads still running then die with the interpreter and abort the process now and then.
THREADS_AFTER_CLEANUP = """
import glob, torch
from trainers.training import distributed
distributed.setup()
distributed.all_reduce_sum(torch.ones(3))
torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
distributed.barrier()
distributed.cleanup()
import time
for _ in range(50):  # gloo's loop thread ends on its own a moment after the group is destroyed
    left = sorted(open(p).read().strip() for p in glob.glob("/proc/self/task/*/comm"))
    if not any("gloo" in n for n in left):
        raise SystemExit(0)
    time.sleep(0.1)
raise SystemExit(f"gloo threads left 5 s after cleanup: {left}")
"""


@pytest.mark.torchrun
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process's threads from /proc")
def test_torchrun_cleanup_leaves_no_gloo_thread(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(THREADS_AFTER_CLEANUP)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script)]
    proc = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_train_device_cuda_without_a_gpu_is_one_error_line(tmp_path, latents, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_prior.main(_prior_command(tmp_path / "prior", latents(), "train.device=cuda")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.device=cuda but this torch sees no GPU" in err[0] and "train.device=cpu" in err[0]


def test_train_device_names_the_choices(tmp_path, latents, capsys):
    assert train_prior.main(_prior_command(tmp_path / "prior", latents(), "train.device=gpu")) == 1
    assert "train.device must be 'cpu' or 'cuda', got 'gpu'" in capsys.readouterr().err


def test_vqgan_train_device_cuda_without_a_gpu_is_one_error_line(tmp_path, vqgan_config, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress", "--set", "train.device=cuda"]
    assert train_vqgan.main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.device=cuda but this torch sees no GPU" in err[0] and "train.device=cpu" in err[0]
    assert train_vqgan.main(command[:-1] + ["train.device=gpu"]) == 1
    assert "train.device must be 'cpu' or 'cuda', got 'gpu'" in capsys.readouterr().err


def test_whole_canvas_crops_sit_on_the_token_grid_of_their_canvas(images):
    """data.whole_canvas: each crop is its canvas's window at the corner given in tokens, flipped
    canvases included, so the decoder can learn from the tokens the whole canvas encodes to."""
    config = DataConfig(path=str(images), resolution=64, crop=16, cache_size=32, val_fraction=VAL_FRACTION,
                        whole_canvas=True, recolour=0.5, synthetic=0.3)
    data = ImageSet(config, "train", progress=False)
    canvases, crops, corners, owners = data.random_canvas_batch(12, torch.Generator().manual_seed(0), factor=8)
    assert canvases.shape == (12, 3, 64, 64) and crops.shape == (12, 3, 16, 16) and corners.shape == (12, 2)
    assert corners.min() >= 0 and corners.max() <= (64 - 16) // 8 and len({tuple(c) for c in corners.tolist()}) > 1
    assert owners.tolist() == list(range(12))
    for canvas, crop, (y, x) in zip(canvases, crops, corners.tolist()):
        assert torch.equal(crop, canvas[:, y * 8:y * 8 + 16, x * 8:x * 8 + 16])
    again = data.random_canvas_batch(12, torch.Generator().manual_seed(0), factor=8)
    assert all(torch.equal(a, b) for a, b in zip(again, (canvases, crops, corners, owners)))  # same seed, same batch
    with pytest.raises(InputError, match="token grid"):  # a grid step that is not whole cached pixels
        data.random_canvas_batch(2, torch.Generator(), factor=3)


def test_several_crops_share_one_whole_canvas(images):
    """data.crops_per_canvas: a batch of 12 crops from 3 canvases, each crop its own canvas's window
    (flipped or synthetic canvases included), at corners drawn per crop."""
    config = DataConfig(path=str(images), resolution=64, crop=16, cache_size=32, val_fraction=VAL_FRACTION,
                        whole_canvas=True, recolour=0.5, synthetic=0.3, crops_per_canvas=4)
    data = ImageSet(config, "train", progress=False)
    canvases, crops, corners, owners = data.random_canvas_batch(12, torch.Generator().manual_seed(1), factor=8)
    assert canvases.shape == (3, 3, 64, 64) and crops.shape == (12, 3, 16, 16)
    assert owners.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for k, crop, (y, x) in zip(owners.tolist(), crops, corners.tolist()):
        assert torch.equal(crop, canvases[k, :, y * 8:y * 8 + 16, x * 8:x * 8 + 16])
    assert len({tuple(c) for c in corners[:4].tolist()}) > 1  # one canvas, several windows
    with pytest.raises(InputError, match="divide the batch"):
        data.random_canvas_batch(6, torch.Generator(), factor=8)


def test_whole_canvas_training_encodes_crops_inside_their_canvas_and_needs_a_frozen_encoder(tmp_path, vqgan_config,
                                                                                            monkeypatch):
    run = tmp_path / "run"
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress", "--set", "data.whole_canvas=true",
               "--set", "data.resolution=64", "--set", "data.crop=32", "--set", "data.cache_size=64"]
    assert train_vqgan.main(command) == 1  # the encoder would train on nothing: refused before any work
    assert not (run / "state.safetensors").exists()
    seen = []
    real = train_vqgan.canvas_latents

    def spy(model, canvases, owners, corners, side):
        latents = real(model, canvases, owners, corners, side)
        seen.append((canvases.shape, latents.shape))
        # each window is its whole canvas's encoding there, not the crop's own encoding
        with torch.no_grad():
            whole = model.encode_latents(canvases[-1:])
        y, x = corners[-1].tolist()
        assert owners[-1] == len(canvases) - 1
        assert torch.allclose(latents[-1:], whole[:, :, y:y + side, x:x + side], atol=1e-4)
        return latents

    monkeypatch.setattr(train_vqgan, "canvas_latents", spy)
    frozen = command + ["--set", "train.freeze_encoder=true", "--set", "train.steps=2"]
    assert train_vqgan.main(frozen) == 0
    assert seen and seen[0] == ((2, 3, 64, 64), (2, 4, 16, 16))
    seen.clear()
    assert train_vqgan.main(frozen + ["--set", "data.crops_per_canvas=2", "--run-dir", str(tmp_path / "shared")]) == 0
    assert seen and seen[0] == ((1, 3, 64, 64), (2, 4, 16, 16))  # one canvas encoded for the two crops
    assert train_vqgan.main(frozen + ["--set", "data.crops_per_canvas=3", "--run-dir", str(tmp_path / "odd")]) == 1


def test_keep_every_keeps_the_model_of_each_such_step_beside_the_newest(tmp_path, vqgan_config, capsys):
    run = tmp_path / "run"
    # ckpt_every 2 (the fixture) with keep_every 3: step 3 is saved for the keeping alone
    command = ["--config", str(vqgan_config), "--run-dir", str(run), "--no-progress",
               "--set", "train.steps=6", "--set", "train.keep_every=3"]
    assert train_vqgan.main(command) == 0
    kept = sorted(p.name for p in (run / "kept").iterdir())
    assert kept == ["model_000003.safetensors", "model_000006.safetensors"]
    assert read_metadata(run / "kept" / kept[0])["step"] == "3"
    assert (run / "kept" / kept[1]).read_bytes() == (run / "model.safetensors").read_bytes()
    # a copy killed mid-write leaves its temporary in kept/: the next start removes it
    (run / "kept" / ".model_000009.safetensors.k1ll3d.tmp").write_bytes(b"half a model")
    assert train_vqgan.main(["--run-dir", str(run), "--no-progress", "--set", "train.steps=7"]) == 0
    assert not _tmp_files(run)
    capsys.readouterr()
    assert train_vqgan.main(["--config", str(vqgan_config), "--run-dir", str(tmp_path / "bad"), "--no-progress",
                             "--set", "train.keep_every=-1"]) == 1
    assert "train.keep_every must be >= 0 (0 = keep only the newest model)" in capsys.readouterr().err


def test_the_prior_trainer_keeps_its_weight_average_every_keep_every_steps(tmp_path, latents):
    data = latents(decoder="pixels")
    run = tmp_path / "prior"
    argv = ["--run-dir", str(run), "--no-progress",
            *_sets(PRIOR_SETTINGS + [f"data.path={data}", "train.steps=4", "train.ckpt_every=4", "train.keep_every=2"])]
    assert train_prior.main(argv) == 0
    assert sorted(p.name for p in (run / "kept").iterdir()) == ["model_000002.safetensors", "model_000004.safetensors"]
    assert load_prior(run / "kept" / "model_000002.safetensors").config.vocab_size == 16

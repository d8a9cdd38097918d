"""Checkpoints: exact round-trips, atomic writes, and one clear line for every broken file."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sundae_core.checkpoint import (FORMAT_VERSION, atomic_write, load_checkpoint, load_state_strict,
                                    read_metadata, save_checkpoint)
from sundae_core.config import HourglassConfig, VQGANConfig, to_dict
from sundae_core.errors import CheckpointError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior, load_vqgan, save_model
from sundae_core.vqgan import VQGAN
from trainers.training import train_prior

TINY_PRIOR = HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3)
TINY_VQGAN = VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                         z_channels=4, embed_dim=4, n_embed=16)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 5, generator=g), "ids": torch.randint(0, 9, (7,), generator=g),
            "half": torch.randn(4, generator=g).bfloat16(), "flag": torch.tensor([True, False]),
            "scalar": torch.tensor(2.5)}


def _tmp_files(folder: Path):
    return sorted(p.name for p in folder.rglob("*.tmp"))


def _one_line_about(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


def test_round_trip_is_exact_and_carries_kind_config_metadata(tmp_path):
    path = tmp_path / "a.safetensors"
    tensors = _tensors()
    save_checkpoint(path, tensors, kind="prior", config={"dim": 16, "depth": [1, [1, 2, 1], 1]},
                    metadata={"step": 7})
    ckpt = load_checkpoint(path, kind="prior")
    assert ckpt.kind == "prior" and ckpt.config == {"dim": 16, "depth": [1, [1, 2, 1], 1]}
    assert ckpt.metadata["step"] == "7" and ckpt.metadata["sundae.format"] == str(FORMAT_VERSION)
    assert set(ckpt.tensors) == set(tensors)
    for k, v in tensors.items():
        assert ckpt.tensors[k].dtype == v.dtype and torch.equal(ckpt.tensors[k], v)
    # non-contiguous views and tensors sharing storage are saved too
    base = torch.arange(12.0).view(3, 4)
    save_checkpoint(path, {"t": base.t(), "row": base[1]}, kind="x")
    back = load_checkpoint(path).tensors
    assert torch.equal(back["t"], base.t()) and torch.equal(back["row"], base[1])


def test_models_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    prior, vq = HourglassTransformer(TINY_PRIOR).eval(), VQGAN(TINY_VQGAN).eval()
    save_model(tmp_path / "p.safetensors", prior, metadata={"step": "3"})
    save_model(tmp_path / "v.safetensors", vq)
    prior2, vq2 = load_prior(tmp_path / "p.safetensors"), load_vqgan(tmp_path / "v.safetensors")
    assert prior2.config == TINY_PRIOR and vq2.config == TINY_VQGAN
    tokens = torch.randint(0, 16, (2, 3, 5))
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(prior(tokens, labels), prior2(tokens, labels))
        assert torch.equal(vq.decode(tokens), vq2.decode(tokens))
    assert not any(p.requires_grad for p in prior2.parameters()) and not prior2.training
    assert load_prior(tmp_path / "p.safetensors", dtype=torch.bfloat16).embed.weight.dtype == torch.bfloat16


def test_atomic_write_leaves_no_temp_files_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "m.safetensors"  # the folder is created
    save_checkpoint(path, {"x": torch.ones(3)}, kind="prior")
    assert _tmp_files(tmp_path) == [] and sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]

    def half_then_fail(tmp):
        Path(tmp).write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert _tmp_files(tmp_path) == []
    assert torch.equal(load_checkpoint(path).tensors["x"], torch.ones(3))
    # files get the usual permissions, not mkstemp's 0600
    assert path.stat().st_mode & 0o044


def test_a_write_killed_midway_never_corrupts_the_old_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"x": torch.ones(1000)}, kind="prior")
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from sundae_core.checkpoint import atomic_write

        def write(tmp):
            Path(tmp).write_bytes(b"half a checkpoint")
            print("writing", flush=True)
            time.sleep(60)

        atomic_write({str(path)!r}, write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(_tmp_files(tmp_path)) == 1  # the kill leaves the temporary, never the target
    assert torch.equal(load_checkpoint(path).tensors["x"], torch.ones(1000))


def test_missing_and_not_a_file(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "nope.safetensors")
    _one_line_about(err, tmp_path / "nope.safetensors", "does not exist")
    with pytest.raises(CheckpointError) as err:
        load_prior(tmp_path)
    _one_line_about(err, tmp_path, "not a file")


@pytest.mark.parametrize("content", [b"", b"\x00" * 4, b"garbage " * 50, b"PK\x03\x04" + os.urandom(300)],
                         ids=["empty", "short", "text", "zip"])
def test_not_safetensors(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    for load in (lambda: load_checkpoint(path), lambda: read_metadata(path), lambda: load_vqgan(path)):
        with pytest.raises(CheckpointError) as err:
            load()
        _one_line_about(err, path, "not a readable safetensors file")


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "model.safetensors"
    save_model(path, HourglassTransformer(TINY_PRIOR))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as err:
        load_prior(path)
    _one_line_about(err, path, "truncated")


def test_wrong_kind(tmp_path):
    path = tmp_path / "prior.safetensors"
    save_model(path, HourglassTransformer(TINY_PRIOR))
    with pytest.raises(CheckpointError) as err:
        load_vqgan(path)
    _one_line_about(err, path, "'prior'", "'vqgan'")
    # a safetensors file from elsewhere (no sundae metadata)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.ones(2)}, str(foreign))
    with pytest.raises(CheckpointError) as err:
        load_vqgan(foreign)
    _one_line_about(err, foreign, "without sundae metadata")


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({"x": torch.ones(2)}, str(path),
              metadata={"sundae.kind": "prior", "sundae.format": str(FORMAT_VERSION + 1), "sundae.config": "{}"})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, kind="prior")
    _one_line_about(err, path, "newer", str(FORMAT_VERSION + 1))


def test_key_and_shape_mismatch(tmp_path):
    model = HourglassTransformer(TINY_PRIOR)
    state = model.state_dict()
    path = tmp_path / "p.safetensors"
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "head.bias"}, "missing 1 key(s) e.g. head.bias"),
        "unexpected": ({**state, "extra.weight": torch.ones(1)}, "1 unexpected key(s) e.g. extra.weight"),
        "shape": ({**state, "head.bias": torch.zeros(17)}, "shape mismatch(es) e.g. head.bias: file (17,)"),
    }
    for tensors, words in cases.values():
        with pytest.raises(CheckpointError) as err:
            load_state_strict(HourglassTransformer(TINY_PRIOR), tensors, path)
        _one_line_about(err, path, words)
    # the same through a file whose embedded config disagrees with its weights
    save_checkpoint(path, state, kind="prior", config={**TINY_PRIOR.__dict__, "vocab_size": 32})
    with pytest.raises(CheckpointError) as err:
        load_prior(path)
    _one_line_about(err, path, "do not match", "shape mismatch")
    # and an embedded config that is not a valid config at all
    save_checkpoint(path, state, kind="prior", config={"dim": 16, "heads": 2, "colour": "red"})
    with pytest.raises(CheckpointError) as err:
        load_prior(path)
    _one_line_about(err, path, "embedded config is invalid", "colour")


def _prior_cli(latent_dir, run_dir, *extra):
    return ["--run-dir", str(run_dir), "--no-progress", "--set", f"data.path={latent_dir}",
            "--set", "model.vocab_size=16", "--set", "model.dim=16", "--set", "model.heads=2",
            "--set", "model.depth=[1, 1, 1]", "--set", "train.steps=1", "--set", "train.bf16=false",
            *extra]


@pytest.mark.parametrize("problem", ["garbage", "truncated", "missing", "wrong kind"])
def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, latents, capsys, problem):
    bad = tmp_path / "vqgan.safetensors"
    if problem in ("truncated", "wrong kind"):
        save_model(bad, HourglassTransformer(TINY_PRIOR))  # a prior where a VQ-GAN is needed
    if problem == "garbage":
        bad.write_bytes(b"this is not a checkpoint\n" * 20)
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:-100])
    rc = train_prior.main(_prior_cli(latents(), tmp_path / "run", "--set", f"train.vqgan={bad}"))
    out, err = capsys.readouterr()
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and "Traceback" not in out + err
    expected = {"garbage": "not a readable safetensors", "truncated": "truncated", "missing": "does not exist",
                "wrong kind": "'prior' checkpoint"}[problem]
    assert expected in lines[0]


def _write_with_config(path: Path, tensors: dict, config_text: str, kind: str = "prior") -> None:
    save_file(tensors, str(path), metadata={"sundae.kind": kind, "sundae.format": "1", "sundae.config": config_text})


def test_a_deeply_nested_embedded_config_is_one_error(tmp_path, latents, capsys):
    path = tmp_path / "vqgan.safetensors"
    _write_with_config(path, {"x": torch.ones(1)}, "[" * 1000 + "]" * 1000, kind="vqgan")
    with pytest.raises(CheckpointError) as err:
        load_vqgan(path)
    _one_line_about(err, path, "embedded config is refused", "nested deeper than 64 levels")
    assert train_prior.main(_prior_cli(latents(), tmp_path / "run", "--set", f"train.vqgan={path}")) == 1
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "nested deeper" in err and "Traceback" not in out + err


def test_an_absurd_embedded_config_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "huge.safetensors"
    # allocating this prior would take 4 * 10**16 bytes; its file holds one float
    config = {**to_dict(TINY_PRIOR), "dim": 10_000_000, "heads": 10, "vocab_size": 10 ** 9, "num_classes": 0}
    _write_with_config(path, {"x": torch.ones(1)}, json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_prior(path)
    _one_line_about(err, path, "GiB of parameters, over the ceiling", "SUNDAE_MAX_MODEL_BYTES")
    # within the ceiling, weights that do not fit the config are refused before the model is built
    config = {**to_dict(TINY_PRIOR), "dim": 8192, "heads": 8}
    _write_with_config(path, HourglassTransformer(TINY_PRIOR).state_dict(), json.dumps(config))
    built = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr(HourglassTransformer, "__init__", _recording_init(built))
    try:
        with pytest.raises(CheckpointError, match="weights do not match the embedded config"):
            load_prior(path)
    finally:
        monkey.undo()
    assert built == ["meta"]  # only the shape-only skeleton was ever made


def _recording_init(built: list):
    original = HourglassTransformer.__init__

    def init(self, config):
        original(self, config)
        built.append(next(self.parameters()).device.type)

    return init


@pytest.mark.parametrize("damage, words", [
    ("nan", "holds NaN or infinite values"),
    ("integer", "is stored as torch.int64, not floating point"),
])
def test_nan_or_integer_weights_are_refused(tmp_path, damage, words):
    state = {k: v.clone() for k, v in HourglassTransformer(TINY_PRIOR).state_dict().items()}
    if damage == "nan":
        state["head.weight"][0, 0] = float("nan")
    else:
        state["head.weight"] = state["head.weight"].round().long()
    path = tmp_path / "p.safetensors"
    save_checkpoint(path, state, kind="prior", config=to_dict(TINY_PRIOR))
    with pytest.raises(CheckpointError) as err:
        load_prior(path)
    _one_line_about(err, path, "head.weight", words)


def test_a_full_disk_or_a_read_only_folder_keeps_the_old_file_and_says_so_in_one_line(tmp_path, monkeypatch):
    import safetensors

    import sundae_core.checkpoint as checkpoint

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"x": torch.ones(3)}, kind="prior")

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                          "message: \"No space left on device\" })")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, {"x": torch.zeros(3)}, kind="prior")
    _one_line_about(err, path, "cannot write", "StorageFull", "unchanged")
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".m.safetensors.x.tmp"))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError) as err:
        save_checkpoint(path, {"x": torch.zeros(3)}, kind="prior")
    assert err.value.filename == str(path)  # the file being written, not the temporary
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path).tensors["x"], torch.ones(3)) and _tmp_files(tmp_path) == []

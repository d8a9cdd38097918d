"""scripts/safetensors_parts.py: a checkpoint split under a size limit joins back bit for bit."""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "safetensors_parts.py"
spec = importlib.util.spec_from_file_location("safetensors_parts", SCRIPT)
parts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(parts)


def _read(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_split_keeps_each_part_under_the_limit_and_join_restores_the_file(tmp_path):
    tensors = {f"w{i}": torch.randn(64, 64) for i in range(6)}  # 16 KiB each
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"config": "{}", "kind": "prior"})
    written = parts.split(tmp_path / "model.safetensors", tmp_path / "out", max_bytes=40 * 1024)
    assert len(written) == 3 and all(p.stat().st_size < 40 * 1024 + 4096 for p in written)
    parts.join(tmp_path / "joined.safetensors", written)
    meta, joined = _read(tmp_path / "joined.safetensors")
    assert meta == {"config": "{}", "kind": "prior"}
    assert joined.keys() == tensors.keys() and all(torch.equal(joined[k], tensors[k]) for k in tensors)


def test_join_refuses_a_missing_part(tmp_path):
    save_file({f"w{i}": torch.zeros(64, 64) for i in range(4)}, str(tmp_path / "m.safetensors"))
    written = parts.split(tmp_path / "m.safetensors", tmp_path / "out", max_bytes=20 * 1024)
    with pytest.raises(SystemExit, match="every part of one split"):
        parts.join(tmp_path / "joined.safetensors", written[:-1])

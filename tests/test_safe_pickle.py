import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from sundae_core.errors import CheckpointError
from trainers.checkpoints.safe_pickle import (Opaque, UnsafePickleError, load_numpy_pickle, load_torch_checkpoint,
                                  loads_numpy_pickle)


class _Payload:
    """Unpickling this would run `os.system(...)` under a plain pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evil:
    """A class a checkpoint might name; its __reduce__ calls eval."""

    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_numpy_pickle_round_trip_all_protocols():
    data = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.zeros(3, np.float64)},
            "list": [np.int64(3), np.float32(1.5), (1, "x", None)], "od": OrderedDict(k=b"bytes"),
            "set": {1, 2}, "c": 1 + 2j}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        out = loads_numpy_pickle(pickle.dumps(data, protocol=protocol))
        np.testing.assert_array_equal(out["a"]["kernel"], data["a"]["kernel"])
        assert out["a"]["kernel"].dtype == np.float32
        assert out["list"][0] == 3 and out["list"][2] == (1, "x", None)
        assert out["od"] == OrderedDict(k=b"bytes") and out["set"] == {1, 2} and out["c"] == 1 + 2j


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_os_system_payload_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"weights": np.ones(2), "x": _Payload(marker)}, protocol=protocol)
    path = tmp_path / "evil.pkl"
    path.write_bytes(blob)
    with pytest.raises(UnsafePickleError, match="system"):
        load_numpy_pickle(path)
    assert not marker.exists()


def test_other_callables_and_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="eval"):
        loads_numpy_pickle(pickle.dumps(_Evil()))
    with pytest.raises(UnsafePickleError, match="builtins.getattr"):
        loads_numpy_pickle(pickle.dumps(getattr))
    with pytest.raises(UnsafePickleError, match="objects"):
        loads_numpy_pickle(pickle.dumps(np.array([1, "a"], dtype=object)))


def test_shared_references_are_checked_once_and_cycles_refused(monkeypatch):
    shared = [np.zeros(1)]
    for _ in range(60):  # 2**60 paths through 61 lists: walking every path would never end
        shared = [shared, shared]
    blob = pickle.dumps(shared, protocol=2)
    assert len(blob) < 1000
    calls = []

    def counting_isinstance(obj, kinds):  # every step of the check asks isinstance at least once
        calls.append(1)
        if len(calls) > 10_000:
            raise AssertionError("the check walks the same objects again and again")
        return isinstance(obj, kinds)

    import trainers.checkpoints.safe_pickle as safe_pickle

    monkeypatch.setattr(safe_pickle, "isinstance", counting_isinstance, raising=False)
    out = loads_numpy_pickle(blob)
    assert out[0] is out[1]
    monkeypatch.undo()
    looped = []
    looped.append(looped)
    with pytest.raises(UnsafePickleError, match="holding themselves"):
        loads_numpy_pickle(pickle.dumps(looped))


def test_garbage_and_missing_files_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        loads_numpy_pickle(b"\x80\x04not a pickle")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_numpy_pickle(tmp_path / "nope.pkl")


def test_torch_checkpoint_plain_tensors(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "global_step": 7}, path)
    out = load_torch_checkpoint(path)
    assert out.opaque == () and out.data["global_step"] == 7
    assert torch.equal(out.data["state_dict"]["w"], torch.arange(4.0))


def test_torch_checkpoint_foreign_classes_become_inert(tmp_path):
    # Lightning stores callback state keyed by class and other objects next to the tensors.
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "callbacks": {_Evil: {"best": 1.0}},
                "hparams": _Evil()}, path)
    out = load_torch_checkpoint(path)
    assert torch.equal(out.data["state_dict"]["w"], torch.ones(2))
    assert any(name.endswith("_Evil") for name in out.opaque)
    assert "builtins.eval" in out.opaque  # _Evil() pickles as a call of eval: replaced, not run
    assert isinstance(out.data["hparams"], Opaque)
    assert out.data["hparams"].args == ("1 + 1",)


def test_torch_checkpoint_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(UnsafePickleError, match="refused"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_torch_checkpoint_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_torch_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch_checkpoint(tmp_path / "missing.ckpt")

"""The opt-in torch.compile path (sundae_core/compiled.py)."""

import os
import shutil

import pytest
import torch

from sundae_core import compiled
from sundae_core.config import HourglassConfig
from sundae_core.errors import InputError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.sampler import model_logits_fn


def _tiny():
    torch.manual_seed(0)
    config = HourglassConfig(vocab_size=16, dim=32, heads=2, depth=(1, (1, 1, 1), 1), shorten=4, num_classes=3)
    return HourglassTransformer(config).eval()


def test_without_a_cxx_compiler_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="apt-get install g\\+\\+"):
        model_logits_fn(_tiny(), compile=True)


@pytest.mark.skipif(not os.environ.get("SUNDAE_SLOW_TESTS"), reason="compiling takes about a minute; "
                    "set SUNDAE_SLOW_TESTS=1 to run")
def test_compiled_logits_equal_eager_and_inputs_are_still_checked():
    model = _tiny()
    fn = model_logits_fn(model, compile=True)
    with torch.inference_mode():
        for batch in (2, 3):  # the second batch size exercises the dynamic-batch recompile
            tokens, labels = torch.randint(0, 16, (batch, 6, 6)), torch.randint(0, 4, (batch,))
            torch.testing.assert_close(fn(tokens, labels), model(tokens, labels))
        with pytest.raises(InputError, match="token ids"):
            fn(torch.full((1, 6, 6), 99), None)

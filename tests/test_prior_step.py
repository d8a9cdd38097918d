"""The compiled prior training step is the eager step, and a tiny prior still learns with it."""

import shutil

import pytest
import torch

from sundae_core.config import HourglassConfig
from sundae_core.cpu_features import cpu_bf16_is_fast
from sundae_core.hourglass import HourglassTransformer
from sundae_core.unroll import unrolled_loss
from trainers.training.prior_step import make_optimizer, make_step_loss

V = 16
CONFIG = HourglassConfig(vocab_size=V, dim=32, heads=2, depth=(1, 1, 1), shorten=4, num_classes=3)

needs_compiler = pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"),
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def _loss_and_grads(model, step_loss, tokens, labels, seed):
    model.zero_grad(set_to_none=True)
    out = unrolled_loss(None, tokens, V, steps=2, generator=torch.Generator().manual_seed(seed), labels=labels,
                        block_share=0.5, step_loss=step_loss)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


@needs_compiler
def test_compiled_step_matches_eager_and_learns():
    torch.manual_seed(0)
    model = HourglassTransformer(CONFIG).train()
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, V, (4, 8, 8), generator=g)  # a handful of grids to memorise
    labels = torch.tensor([0, 1, 2, 0])
    # bf16 as the trainer steps on this CPU (in fp32 where it has no bf16 kernels: cpu_features)
    bf16 = cpu_bf16_is_fast()
    eager = make_step_loss(model, bf16=bf16, compile=False)
    fast = make_step_loss(model, bf16=bf16, compile=True)
    # the same corruption and the same sample between the unrolled steps (same seed): the losses
    # and every gradient agree within bf16 tolerance
    ref, ref_grads = _loss_and_grads(model, eager, data, labels, seed=7)
    got, got_grads = _loss_and_grads(model, fast, data, labels, seed=7)
    assert torch.allclose(got.per_step[0], ref.per_step[0], rtol=2e-2)
    assert torch.allclose(got.loss, ref.loss, rtol=5e-2)
    for name, grad in ref_grads.items():
        scale = grad.abs().max().clamp_min(1e-6)
        assert (got_grads[name] - grad).abs().max() / scale < 0.1, name
    # can it learn: the compiled step drives the loss down on a few grids
    opt = make_optimizer(model, 3e-3, 0.0, (0.9, 0.99), fused=True)
    noise = torch.Generator().manual_seed(2)
    first = None
    for _ in range(60):
        out = unrolled_loss(None, data, V, steps=2, generator=noise, labels=labels, step_loss=fast)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.loss.item()
    assert out.loss.item() < 0.85 * first  # from ln(16) = 2.77 at the start


def _clean_step_loss(model):
    """A step loss that scores the clean tokens whatever the corruption drew: deterministic, so one
    batch and its micro-batches must give the same gradient."""
    def step_loss(z, labels, targets):
        logits = model(targets, labels)
        return logits, torch.nn.functional.cross_entropy(logits.flatten(0, 2).float(), targets.flatten())
    return step_loss


def _step_grads(accumulate, tokens, labels):
    from dataclasses import replace

    from trainers.training.prior_step import train_step
    from trainers.training.train_prior import PriorTrainConfig
    torch.manual_seed(0)
    model = HourglassTransformer(CONFIG).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that leaves the weights for comparing
    tc = replace(PriorTrainConfig(), unroll_steps=1, label_dropout=0.0, accumulate=accumulate, grad_clip=0.0)
    out, norm = train_step(model, opt, _clean_step_loss(model), tokens, labels, tc, torch.Generator().manual_seed(3))
    return out, norm, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_accumulated_micro_batches_give_the_whole_batchs_gradient_and_loss():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (8, 8, 8), generator=g)
    labels = torch.randint(0, 3, (8,), generator=g)
    whole, whole_norm, whole_grads = _step_grads(1, tokens, labels)
    for parts in (2, 4):
        got, norm, grads = _step_grads(parts, tokens, labels)
        assert torch.allclose(got.loss, whole.loss, rtol=1e-5)
        assert torch.allclose(got.accuracy, whole.accuracy)
        assert not got.loss.requires_grad  # the parts' graphs are gone once their backward ran
        assert torch.allclose(norm, whole_norm, rtol=1e-4)
        for name, grad in whole_grads.items():
            assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-7), (parts, name)


def test_accumulate_must_split_the_batch_evenly():
    from sundae_core.errors import ConfigError
    from trainers.training.config_ranges import check_run_config
    from trainers.training.train_prior import PriorRunConfig, PriorTrainConfig
    check_run_config(PriorRunConfig(train=PriorTrainConfig(batch_size=256, accumulate=16)))
    with pytest.raises(ConfigError, match=r"train.batch_size \(30\) must split into train.accumulate \(4\)"):
        check_run_config(PriorRunConfig(train=PriorTrainConfig(batch_size=30, accumulate=4)))
    with pytest.raises(ConfigError, match="train.accumulate must be >= 1"):
        check_run_config(PriorRunConfig(train=PriorTrainConfig(accumulate=0)))

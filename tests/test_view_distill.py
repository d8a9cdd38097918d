"""View distillation (trainers/training/view_distill.py): the KL term's known answers, that a
student can learn a teacher's views through it, and the trainer's wiring and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import save_model
from sundae_core.sampler import model_logits_fn
from sundae_core.shifted_views import ShiftedViews
from trainers.training import train_prior
from trainers.training.view_distill import view_distill_loss

TINY = dict(vocab_size=16, dim=16, heads=2, depth=(1, (1, 1, 1), 1), shorten=4)


def _prior(seed: int, **changes) -> HourglassTransformer:
    torch.manual_seed(seed)
    return HourglassTransformer(HourglassConfig(**{**TINY, **changes})).eval()


def test_the_term_is_zero_for_the_student_itself_and_weighted_kl_otherwise():
    student, teacher = _prior(0), _prior(1)
    z = torch.randint(0, 16, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = student(z, None)
        assert float(view_distill_loss(student, 1, 1.0)(z, None, logits)) == pytest.approx(0, abs=1e-6)
        # by hand: the views' mean log-probability, renormalised, against the student's
        target = ShiftedViews(model_logits_fn(teacher), 4)(z, None).log_softmax(-1)
        own = logits.log_softmax(-1)
        kl = (target.exp() * (target - own)).sum(-1).mean()
        assert float(view_distill_loss(teacher, 4, 2.5)(z, None, logits)) == pytest.approx(2.5 * float(kl), rel=1e-4)


def test_a_student_learns_its_teachers_views_and_the_teacher_stays_put():
    """Can it learn: only the distillation term trains a fresh student towards another prior's
    4-view average; the KL falls well below where it started and the teacher gets no gradient."""
    student, teacher = _prior(0).train(), _prior(1)
    before = [p.clone() for p in teacher.parameters()]
    term = view_distill_loss(teacher, 4, 1.0)
    z = torch.randint(0, 16, (4, 8, 8), generator=torch.Generator().manual_seed(1))
    optimiser = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = term(z, None, student(z, None))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def _settings(data, *extra):
    sets = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, [1, 1, 1], 1]",
            "train.batch_size=4", "train.warmup=1", "train.log_every=1",
            "train.val_every=1000", "train.val_batches=1", "train.val_samples=0", "train.sample_every=1000",
            "train.bf16=false", f"data.path={data}", *extra]
    return [arg for item in sets for arg in ("--set", item)]


def test_the_trainer_logs_the_kl_with_its_teacher_from_train_init(tmp_path, latents):
    data = latents(height=8, width=8)
    init = tmp_path / "init.safetensors"
    save_model(init, _prior(3))
    run = tmp_path / "run"
    args = ["--run-dir", str(run), "--no-progress"]
    assert train_prior.main(args + _settings(data, f"train.init={init}", "train.view_distill=0.5",
                                             "train.view_distill_views=2", "train.accumulate=2",
                                             "train.steps=2")) == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss" in row]
    kl = [row["distill"] for row in steps]
    assert len(kl) == 2 and all(0 <= value < 5 for value in kl)
    # "loss" is the data's cross-entropy alone, comparable with runs without the term
    assert all(row["loss"] == pytest.approx((row["loss_step1"] + row["loss_step2"]) / 2) for row in steps)
    # the first step starts from the teacher's own weights: the views alone make it differ
    assert kl[0] > 0


def test_without_a_teacher_or_with_another_vocabulary_it_is_one_error_line(tmp_path, latents, capsys):
    data = latents(height=8, width=8)
    args = ["--run-dir", str(tmp_path / "a"), "--no-progress"]
    assert train_prior.main(args + _settings(data, "train.view_distill=1", "train.steps=1")) == 1
    assert "train.view_distill needs a teacher" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    save_model(other, _prior(4, vocab_size=32))
    args = ["--run-dir", str(tmp_path / "b"), "--no-progress"]
    assert train_prior.main(args + _settings(data, "train.view_distill=1", f"train.view_distill_teacher={other}",
                                             "train.steps=1")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocab_size 32" in err[0] and "train.view_distill_teacher" in err[0]
    assert train_prior.main(args + _settings(data, "train.view_distill_views=10", "train.steps=1")) == 1
    assert "train.view_distill_views must be in [1, 9]" in capsys.readouterr().err

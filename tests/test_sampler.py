"""The SUNDAE sampler (issue 4): invariants of denoise_step and sample with toy logits functions."""

import pytest
import torch
import torch.nn.functional as F

from sundae_core import sampler
from sundae_core.errors import InputError
from sundae_core.sampler import denoise_step, random_tokens, sample, sample_categorical
from sundae_core.schedules import schedule_values

V = 8


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def identity_fn(tokens, labels=None):
    """A model that returns its input: one-hot logits of the current tokens."""
    return F.one_hot(tokens, V).float() * 50


def table_fn(seed=0):
    """A fixed random 'model': each token's logits come from a table row (deterministic)."""
    table = torch.randn(V, V, generator=_gen(seed)) * 2
    return lambda tokens, labels=None: table[tokens]


def counting(fn):
    """Wrap a logits_fn, recording the batch size of every call."""
    sizes = []

    def wrapped(tokens, labels=None):
        sizes.append(tokens.shape[0])
        return fn(tokens, labels)

    wrapped.sizes = sizes
    return wrapped


def test_proportion_zero_changes_nothing():
    tokens = random_tokens(3, 4, 5, V, generator=_gen())
    for selection in ("random", "confidence"):
        step = denoise_step(table_fn(), tokens, generator=_gen(), proportion=0.0, selection=selection)
        assert torch.equal(step.tokens, tokens) and not step.changed.any()
        out = sample(table_fn(), tokens, generator=_gen(), steps=20, proportion=0.0, min_steps=3,
                     selection=selection)
        assert torch.equal(out.tokens, tokens) and out.steps_used.tolist() == [3, 3, 3]
    with pytest.raises(InputError, match="proportion"):
        denoise_step(table_fn(), tokens, proportion=1.5)
    with pytest.raises(InputError, match="selection"):
        denoise_step(table_fn(), tokens, selection="best")


def _marker_fn():
    """Samples whose known corner token is 0 converge fast (a fixed target); the others get flat
    logits and keep changing. Identity lives in the tokens, so it survives batch subsetting."""
    target = 5

    def fn(tokens, labels=None):
        fast = tokens[:, 0, 0] == 0
        logits = torch.zeros(*tokens.shape, V)
        logits[fast] = F.one_hot(torch.full_like(tokens[fast], target), V).float() * 50
        return logits

    return fn


def test_known_positions_never_change_while_samples_stop_at_different_steps():
    b, h, w = 4, 4, 4
    tokens = random_tokens(b, h, w, V, generator=_gen(1))
    tokens[:, 0, 0] = torch.tensor([0, 1, 0, 2])  # samples 0 and 2 are fast
    repaint = torch.ones(b, h, w, dtype=torch.bool)
    repaint[:, 0, :] = False  # first row known in every sample
    repaint[1, :, 0] = False  # plus a per-sample part: the left column of sample 1
    known = tokens.clone()
    states = []
    fn = counting(_marker_fn())
    out = sample(fn, tokens, generator=_gen(), steps=30, temperature=1.0, proportion=0.5, repaint=repaint,
                 min_steps=4, callback=lambda info: states.append((info["tokens"].clone(), info["active"])))
    for state, _ in states:
        assert torch.equal(state[~repaint], known[~repaint])
    assert torch.equal(out.tokens[~repaint], known[~repaint])
    used = out.steps_used.tolist()
    assert used[1] == used[3] == 30 and used[0] < 30 and used[2] < 30 and used[0] != 30
    assert (out.tokens[[0, 2]][repaint[[0, 2]]] == 5).all()  # the fast ones reached their target
    # frozen samples cost nothing: the model saw exactly the running samples at each step
    active_before = [b] + [int(a.sum()) for _, a in states[:-1]]
    assert fn.sizes == active_before and min(fn.sizes) == 2
    # a (h w) mask broadcasts over the batch
    out2 = sample(_marker_fn(), tokens, generator=_gen(), steps=10, repaint=repaint[0], min_steps=2)
    assert torch.equal(out2.tokens[:, 0, :], known[:, 0, :])


def test_same_seed_same_tokens_different_seed_differs():
    z = random_tokens(2, 5, 5, V, generator=_gen(7))
    run = lambda seed, **kw: sample(table_fn(), z, generator=_gen(seed), steps=12, min_steps=2, **kw).tokens
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert torch.equal(run(3, selection="confidence"), run(3, selection="confidence"))
    assert torch.equal(random_tokens(2, 3, 3, V, generator=_gen(1)), random_tokens(2, 3, 3, V, generator=_gen(1)))
    # sampling never touches the global RNG
    torch.manual_seed(0)
    before = torch.get_rng_state()
    run(0)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("min_steps", [1, 5, 10])
def test_a_model_that_returns_its_input_stops_exactly_at_min_steps(min_steps):
    z = random_tokens(3, 4, 4, V, generator=_gen())
    fn = counting(identity_fn)
    out = sample(fn, z, generator=_gen(), steps=50, min_steps=min_steps)
    assert out.steps_used.tolist() == [min_steps] * 3
    assert len(fn.sizes) == min_steps and torch.equal(out.tokens, z)
    out = sample(identity_fn, z, generator=_gen(), steps=7, self_stop=False)
    assert out.steps_used.tolist() == [7] * 3


def test_temperature_to_zero_is_argmax():
    z = random_tokens(2, 6, 6, V, generator=_gen())
    logits = table_fn()(z)
    for tau in (0.0, 1e-4):
        out = denoise_step(table_fn(), z, generator=_gen(), temperature=tau, proportion=1.0)
        assert torch.equal(out.tokens, logits.argmax(-1))
    flat = logits.reshape(-1, V)
    assert torch.equal(sample_categorical(flat, 0.0), flat.argmax(-1))
    # and at temperature 1 the draws follow the softmax
    probs = torch.softmax(torch.tensor([0.0, 1.0, 2.0, -1.0]), -1)
    draws = sample_categorical(torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(20000, 4), 1.0, _gen())
    freq = torch.bincount(draws, minlength=4).float() / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.75, 1.0])
def test_confidence_selection_updates_exactly_round_p_n_most_confident_positions(p):
    b, h, w = 3, 4, 5
    z = random_tokens(b, h, w, V, generator=_gen())
    confidence = torch.rand(b, h, w, generator=_gen(1)) * 5  # per position: how peaked the logits are

    def shifted(tokens, labels=None):
        # the proposal always differs from the current token, so every chosen position changes
        return F.one_hot((tokens + 1) % V, V).float() * confidence[: tokens.shape[0], ..., None]

    repaint = torch.rand(b, h, w, generator=_gen(2)) < 0.7
    out = denoise_step(shifted, z, generator=_gen(), temperature=0.0, proportion=p, repaint=repaint,
                       selection="confidence")
    changed = out.tokens != z
    assert not changed[~repaint].any()
    for i in range(b):
        n = int(repaint[i].sum())
        assert int(changed[i].sum()) == round(p * n)
        if 0 < round(p * n) < n:  # the most confident repaintable positions were taken
            assert confidence[i][changed[i]].min() >= confidence[i][repaint[i] & ~changed[i]].max()


def test_random_selection_updates_about_p_of_the_positions():
    z = random_tokens(4, 32, 32, V, generator=_gen())
    shifted = lambda tokens, labels=None: F.one_hot((tokens + 1) % V, V).float() * 50
    out = denoise_step(shifted, z, generator=_gen(), temperature=1.0, proportion=0.3)
    assert abs((out.tokens != z).float().mean().item() - 0.3) < 0.03


def _conditional_fn(calls):
    """v = 3: conditional logits favour token 0 slightly over 1; the null class strongly favours 0,
    so guidance (cond - uncond) pushes towards 1."""
    def fn(tokens, labels):
        calls.append((tokens.shape[0], labels.clone()))
        cond = torch.tensor([2.0, 1.9, 0.0])
        uncond = torch.tensor([2.0, 0.0, 0.0])
        rows = torch.where((labels == 3)[:, None], uncond, cond)  # label 3 is the null class
        return rows[:, None, None, :].expand(*tokens.shape, 3)
    return fn


def test_classifier_free_guidance_with_a_conditional_toy_model():
    z = torch.zeros(2, 2, 2, dtype=torch.long)
    labels = torch.tensor([0, 1])
    calls = []
    plain = denoise_step(_conditional_fn(calls), z, temperature=0.0, proportion=1.0, labels=labels,
                         guidance=0.0, null_label=3)
    assert (plain.tokens == 0).all() and calls[-1][0] == 2
    guided = denoise_step(_conditional_fn(calls), z, temperature=0.0, proportion=1.0, labels=labels,
                          guidance=1.0, null_label=3)
    assert (guided.tokens == 1).all()
    batch, seen = calls[-1]
    assert batch == 4 and seen.tolist() == [0, 1, 3, 3]  # conditional and unconditional in one call
    with pytest.raises(InputError, match="null class"):
        denoise_step(_conditional_fn(calls), z, labels=labels, guidance=1.0, null_label=None)
    # through sample, with labels given as a scalar for the whole batch
    out = sample(_conditional_fn(calls), z, generator=_gen(), steps=3, temperature=0.0, proportion=1.0,
                 labels=1, guidance=2.0, null_label=3, min_steps=1)
    assert (out.tokens == 1).all()


def test_callback_sees_every_step_and_can_interrupt():
    z = random_tokens(2, 3, 3, V, generator=_gen())
    seen = []
    out = sample(table_fn(), z, generator=_gen(), steps=9, min_steps=9, callback=seen.append, history_every=4)
    assert [i["step"] for i in seen] == list(range(1, 10)) and all(i["total"] == 9 for i in seen)
    assert set(seen[0]) >= {"step", "total", "tokens", "active", "changed"}
    assert torch.equal(seen[-1]["tokens"], out.tokens)
    assert len(out.history) == 4 and torch.equal(out.history[0], z) and torch.equal(out.history[-1], out.tokens)

    class Cancel(Exception):
        pass

    def cancel_at_3(info):
        if info["step"] == 3:
            raise Cancel

    fn = counting(table_fn())
    with pytest.raises(Cancel):
        sample(fn, z, generator=_gen(), steps=9, callback=cancel_at_3)
    assert len(fn.sizes) == 3


def test_schedules():
    assert schedule_values(0.5, 3) == [0.5, 0.5, 0.5]
    assert schedule_values((1.0, 0.7), 4) == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert schedule_values([1.0, 0.7], 1) == [1.0]
    assert schedule_values([0.1, 0.2, 0.9], 3) == [0.1, 0.2, 0.9]
    with pytest.raises(InputError, match="temperature.*3 values"):
        schedule_values([0.1, 0.2, 0.3], 5, "temperature")
    z = random_tokens(1, 2, 2, V, generator=_gen())
    with pytest.raises(InputError, match="proportion"):
        sample(table_fn(), z, steps=4, proportion=[0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="steps"):
        sample(table_fn(), z, steps=0)


def test_sample_follows_the_schedules_step_by_step(monkeypatch):
    seen = []
    real = sampler.denoise_step

    def spy(logits_fn, tokens, **kw):
        seen.append((kw["temperature"], kw["proportion"]))
        return real(logits_fn, tokens, **kw)

    monkeypatch.setattr(sampler, "denoise_step", spy)
    z = random_tokens(1, 2, 2, V, generator=_gen())
    sample(table_fn(), z, generator=_gen(), steps=4, temperature=(1.0, 0.4), proportion=[0.9, 0.5, 0.5, 0.1],
           self_stop=False)
    assert [t for t, _ in seen] == pytest.approx([1.0, 0.8, 0.6, 0.4])
    assert [p for _, p in seen] == [0.9, 0.5, 0.5, 0.1]

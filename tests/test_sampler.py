"""The SUNDAE sampler (issue 4): invariants of denoise_step and sample with toy logits functions."""

import pytest
import torch
import torch.nn.functional as F

from sundae_core import sampler
from sundae_core.errors import InputError
from sundae_core.sampler import (LIMITS, SamplerSettingError, SamplerSettings, denoise_step, random_labels,
                                  random_tokens, sample, sample_categorical)
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
        out = sample(table_fn(), tokens, SamplerSettings(steps=20, proportion=0.0, min_steps=3, selection=selection),
                     generator=_gen())
        # random selection at p = 0 looks at no position, so nothing settles and every step runs;
        # confidence selection ranks every position (and takes none), so the sample settles at once
        steps = 20 if selection == "random" else 3
        assert torch.equal(out.tokens, tokens) and out.steps_used.tolist() == [steps] * 3
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
    out = sample(fn, tokens, SamplerSettings(steps=30, temperature=1.0, proportion=0.5, min_steps=4),
                 generator=_gen(), repaint=repaint, callback=lambda info: states.append((info["tokens"].clone(), info["active"])))
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
    out2 = sample(_marker_fn(), tokens, SamplerSettings(steps=10, min_steps=2), generator=_gen(), repaint=repaint[0])
    assert torch.equal(out2.tokens[:, 0, :], known[:, 0, :])


def test_same_seed_same_tokens_different_seed_differs():
    z = random_tokens(2, 5, 5, V, generator=_gen(7))
    run = lambda seed, **kw: sample(table_fn(), z, SamplerSettings(steps=12, min_steps=2, **kw),
                                    generator=_gen(seed)).tokens
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
    """At proportion 1 every step looks at every token: the paper's rule, stop when nothing changed."""
    z = random_tokens(3, 4, 4, V, generator=_gen())
    fn = counting(identity_fn)
    out = sample(fn, z, SamplerSettings(steps=50, min_steps=min_steps, proportion=1.0), generator=_gen())
    assert out.steps_used.tolist() == [min_steps] * 3
    assert len(fn.sizes) == min_steps and torch.equal(out.tokens, z)
    out = sample(identity_fn, z, SamplerSettings(steps=7, self_stop=False), generator=_gen())
    assert out.steps_used.tolist() == [7] * 3


def _drawn_steps(shape, proportion: float, steps: int, seed: int) -> torch.Tensor:
    """The sampler's update draws for a batch that never shrinks, replayed: (steps b h w) bool.
    identity_fn at temperature 0 draws nothing else from the generator."""
    g = _gen(seed)
    return torch.stack([torch.rand(shape, generator=g) < proportion for _ in range(steps)])


@pytest.mark.parametrize("proportion", [0.2, 0.5])
def test_self_stopping_waits_until_every_token_was_looked_at(proportion):
    """A step at proportion p looks at about p of the tokens, so "a step changed nothing" is no
    sign the rest settled: an inpainting hole that stopped there kept random tokens it started
    from (decoded as coloured speckles). A model that keeps every token stops at the first step
    (>= min_steps) by which every token has been drawn at least once, on each sample's own draws."""
    z = random_tokens(1, 8, 8, V, generator=_gen())
    settings = SamplerSettings(steps=200, min_steps=1, proportion=proportion, temperature=0.0)
    out = sample(identity_fn, z, settings, generator=_gen(3))
    seen = _drawn_steps(z.shape, proportion, 200, seed=3).cumsum(0).bool().flatten(1).all(1)
    first_all_seen = int(seen.float().argmax()) + 1
    assert first_all_seen > 1 and out.steps_used.tolist() == [first_all_seen]


def test_no_token_of_a_hole_is_left_as_it_started():
    """The speckle defect itself: a model that proposes token 3 everywhere, an 8 x 8 hole, p = 0.2.
    Every token of the hole must end as 3 (the old rule left some of the random start there)."""
    z = torch.zeros(4, 16, 16, dtype=torch.long)
    repaint = torch.zeros(16, 16, dtype=torch.bool)
    repaint[4:12, 4:12] = True
    z[:, repaint] = random_tokens(4, 8, 8, V, generator=_gen()).flatten(1)
    always_3 = lambda tokens, labels=None: F.one_hot(torch.full_like(tokens, 3), V).float() * 50
    settings = SamplerSettings(steps=100, min_steps=10, proportion=0.2, temperature=0.3)
    out = sample(always_3, z, settings, generator=_gen(), repaint=repaint)
    assert (out.tokens[:, repaint] == 3).all() and (out.tokens[:, ~repaint] == 0).all()
    assert (out.steps_used < 100).all()  # and it still stops by itself


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


def test_confidence_selection_replaces_the_noise_before_the_tokens_already_right():
    """The prior is sure of the target everywhere, more so where the token already is the target
    (as beside a hole's edge). Ranked by the proposal's probability alone, the positions already
    right would win every step, nothing would change, and self-stopping would end the sample with
    the noise in place; ranked by how much the proposal outranks the current token, it is gone."""
    b, h, w = 2, 4, 4
    target = random_tokens(b, h, w, V, generator=_gen(5))
    start = torch.where(torch.rand(b, h, w, generator=_gen(6)) < 0.5, target, (target + 1) % V)

    def sure_of_target(tokens, labels=None):
        peak = torch.where(tokens == target[: tokens.shape[0]], 8.0, 2.0)
        return F.one_hot(target[: tokens.shape[0]], V).float() * peak[..., None]

    settings = SamplerSettings(steps=20, temperature=(0.0, 0.0), proportion=0.5, min_steps=1, selection="confidence")
    out = sample(sure_of_target, start, settings, generator=_gen())
    assert torch.equal(out.tokens, target)


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
    out = sample(_conditional_fn(calls), z, SamplerSettings(steps=3, temperature=0.0, proportion=1.0, guidance=2.0,
                                                            min_steps=1), generator=_gen(), labels=1, null_label=3)
    assert (out.tokens == 1).all()


def test_callback_sees_every_step_and_can_interrupt():
    z = random_tokens(2, 3, 3, V, generator=_gen())
    seen = []
    out = sample(table_fn(), z, SamplerSettings(steps=9, min_steps=9), generator=_gen(), callback=seen.append,
                 history_every=4)
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
        sample(fn, z, SamplerSettings(steps=9), generator=_gen(), callback=cancel_at_3)
    assert len(fn.sizes) == 3


def test_a_zero_draw_never_picks_a_token_of_probability_zero(monkeypatch):
    # at low temperatures many probabilities underflow to exactly 0; a uniform draw of exactly 0
    # must still land on a token that has probability
    logits = torch.tensor([[-1e4, -1e4, 0.0, 1.0]])
    monkeypatch.setattr(sampler.torch, "rand", lambda *shape, **kw: torch.zeros(*shape))
    assert sample_categorical(logits, 0.3).item() == 2
    monkeypatch.undo()
    draws = sample_categorical(logits.expand(1000, 4), 0.3, _gen())
    assert set(draws.tolist()) <= {2, 3}


def test_history_keeps_the_final_state_once_when_every_sample_stops_on_the_last_step():
    z = random_tokens(2, 3, 3, V, generator=_gen())
    out = sample(identity_fn, z, SamplerSettings(steps=5, min_steps=5, proportion=1.0), generator=_gen(),
                 history_every=2)
    assert out.steps_used.tolist() == [5, 5]
    assert len(out.history) == 4  # the start, steps 2 and 4, and the final state once


def test_schedules():
    assert schedule_values(0.5, 3) == [0.5, 0.5, 0.5]
    assert schedule_values((1.0, 0.7), 4) == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert schedule_values([1.0, 0.7], 1) == [1.0]
    assert schedule_values([0.1, 0.2, 0.9], 3) == [0.1, 0.2, 0.9]
    assert schedule_values([0.8], 3) == [0.8, 0.8, 0.8]
    # a one-value list is the constant, as the settings and every config that builds them read it
    one = SamplerSettings(steps=3, temperature=[0.8], proportion=(0.5,))
    assert one.temperature == 0.8 and one.proportions() == [0.5] * 3
    assert one.to_dict()["temperature_start"] == one.to_dict()["temperature_end"] == 0.8
    with pytest.raises(InputError, match="temperature.*3 values"):
        schedule_values([0.1, 0.2, 0.3], 5, "temperature")
    with pytest.raises(InputError, match="proportion"):
        SamplerSettings(steps=4, proportion=[0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="steps"):
        SamplerSettings(steps=0)


def test_sample_follows_the_schedules_step_by_step(monkeypatch):
    seen = []
    real = sampler._step

    def spy(logits_fn, tokens, generator, temperature, proportion, *rest):
        seen.append((temperature, proportion))
        return real(logits_fn, tokens, generator, temperature, proportion, *rest)

    monkeypatch.setattr(sampler, "_step", spy)
    z = random_tokens(1, 2, 2, V, generator=_gen())
    sample(table_fn(), z, SamplerSettings(steps=4, temperature=(1.0, 0.4), proportion=[0.9, 0.5, 0.5, 0.1],
                                          self_stop=False), generator=_gen())
    assert [t for t, _ in seen] == pytest.approx([1.0, 0.8, 0.6, 0.4])
    assert [p for _, p in seen] == [0.9, 0.5, 0.5, 0.1]


@pytest.mark.parametrize("field, bad", [
    ("steps", 0), ("steps", 2.5), ("steps", True), ("min_steps", -1), ("temperature", -0.1),
    ("temperature", 10.5), ("temperature", (1.0, float("nan"))), ("temperature", (1.0, 0.9, 0.8)),
    ("proportion", 1.5), ("proportion", -0.01), ("guidance", 21.0), ("selection", "best"), ("self_stop", "yes")])
def test_settings_refuse_values_outside_their_limits_naming_the_setting(field, bad):
    with pytest.raises(SamplerSettingError, match=field) as err:
        SamplerSettings(**{field: bad})
    assert err.value.setting == field


def test_settings_limits_are_inclusive_and_schedules_are_normalised():
    for field, (low, high) in LIMITS.items():
        for value in (low, high):
            assert getattr(SamplerSettings(**{field: value}), field) == value
    s = SamplerSettings(steps=3, temperature=[1, 0.5, 0], proportion=1)
    assert s.temperature == (1.0, 0.5, 0.0) and s.proportion == 1.0 and hash(s)  # frozen and hashable
    assert s.temperatures() == [1.0, 0.5, 0.0] and s.proportions() == [1.0] * 3
    assert s.to_dict()["temperature_start"] == 1.0 and s.to_dict()["temperature_end"] == 0.0
    assert SamplerSettings.from_node_inputs({"steps": 5, "temperature_start": 0.5, "temperature_end": 0.3,
                                             "seed": 7, "prior": object()}) == SamplerSettings(steps=5,
                                                                                               temperature=(0.5, 0.3))


def test_denoise_step_checks_its_arguments_and_sample_checks_its_settings_once(monkeypatch):
    z = random_tokens(2, 3, 3, V, generator=_gen())
    with pytest.raises(SamplerSettingError, match="temperature"):
        denoise_step(table_fn(), z, temperature=-1.0)  # no longer silently argmax
    with pytest.raises(SamplerSettingError, match="guidance"):
        denoise_step(table_fn(), z, guidance=-1.0)
    checks = []
    real = sampler.check_setting
    monkeypatch.setattr(sampler, "check_setting", lambda *a: (checks.append(a), real(*a)))
    settings = SamplerSettings(steps=6, min_steps=6)
    checks.clear()
    sample(table_fn(), z, settings, generator=_gen())
    assert checks == []  # validated when built, not once per step
    with pytest.raises(InputError, match="SamplerSettings"):
        sample(table_fn(), z, 6)


def test_denoise_step_takes_one_label_for_the_whole_batch():
    z = torch.zeros(2, 2, 2, dtype=torch.long)
    calls = []
    one = denoise_step(_conditional_fn(calls), z, temperature=0.0, proportion=1.0, labels=torch.tensor([1]),
                       guidance=1.0, null_label=3)
    assert calls[-1][1].tolist() == [1, 1, 3, 3] and (one.tokens == 1).all()
    denoise_step(_conditional_fn(calls), z, temperature=0.0, proportion=1.0, labels=0)
    assert calls[-1][1].tolist() == [0, 0]
    with pytest.raises(InputError, match="3 class labels for a batch of 2"):
        denoise_step(_conditional_fn(calls), z, labels=torch.tensor([0, 1, 2]))


def _tiny_prior(num_classes=3):
    from sundae_core.config import HourglassConfig
    from sundae_core.hourglass import HourglassTransformer

    torch.manual_seed(0)
    config = HourglassConfig(vocab_size=V, dim=32, heads=2, depth=(1, (1, 1, 1), 1), shorten=4,
                             num_classes=num_classes)
    return HourglassTransformer(config).eval()


@pytest.mark.parametrize("selection", ["random", "confidence"])
@pytest.mark.parametrize("guided", [False, True])
def test_logits_at_the_updated_positions_only_give_the_same_samples_as_full_logits(selection, guided):
    # PriorLogits.at runs the vocabulary head only where a step draws; a plain callable gets the
    # full (b h w v) logits and the sampler picks the same rows. Same generator, same tokens.
    model = _tiny_prior()
    fast = sampler.model_logits_fn(model)
    plain = lambda tokens, labels: model(tokens, labels)
    assert hasattr(fast, "at") and not hasattr(plain, "at")
    z = random_tokens(3, 8, 8, V, generator=_gen(1))
    repaint = torch.zeros(8, 8, dtype=torch.bool)
    repaint[2:6, 1:5] = True
    kwargs = dict(labels=torch.tensor([0, 1, 2]), null_label=3) if guided else {}
    settings = SamplerSettings(steps=6, guidance=2.0 if guided else 0.0, selection=selection, min_steps=6)
    with torch.inference_mode():
        for mask in (None, repaint):
            a = sample(fast, z, settings, generator=_gen(2), repaint=mask, **kwargs)
            b = sample(plain, z, settings, generator=_gen(2), repaint=mask, **kwargs)
            assert torch.equal(a.tokens, b.tokens)
            assert not torch.equal(a.tokens, z)


def test_prior_logits_at_equals_the_full_logits_rows():
    model = _tiny_prior()
    fn = sampler.model_logits_fn(model)
    tokens, labels = random_tokens(2, 8, 8, V, generator=_gen(3)), torch.tensor([1, 3])
    positions = torch.tensor([0, 5, 63, 64, 127])
    with torch.inference_mode():
        full = fn(tokens, labels).reshape(-1, V)
        torch.testing.assert_close(fn.at(tokens, labels, positions), full[positions])
        with pytest.raises(InputError, match="token ids"):
            fn.at(torch.full((1, 8, 8), 99), None, positions[:1])


def test_rotary_tables_first_built_while_sampling_still_train():
    # The tables are cached per grid; one made under inference_mode must not poison a later
    # training step ("inference tensors cannot be saved for backward").
    from sundae_core.rotary import _tables

    _tables.cache_clear()
    model = _tiny_prior()
    tokens = random_tokens(2, 8, 8, V, generator=_gen(4))
    with torch.inference_mode():
        model(tokens)
    model.train()
    model(tokens).logsumexp(-1).mean().backward()
    assert model.embed.weight.grad is not None


def test_random_labels_are_uniform_seeded_and_checked():
    labels = random_labels(9000, 9, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(labels, minlength=9)
    assert labels.shape == (9000,) and labels.dtype == torch.long and counts.min() > 850 and counts.max() < 1150
    assert torch.equal(labels, random_labels(9000, 9, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(InputError, match="num_classes >= 1"):
        random_labels(4, 0)


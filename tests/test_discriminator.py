import pytest
import torch
from torch import nn

from sundae_core.errors import ConfigError, InputError
from trainers.training.discriminator import DiscriminatorConfig, PatchDiscriminator
from trainers.training.vqgan_losses import (ADAPTIVE_WEIGHT_MAX, adaptive_weight, disc_factor, g_loss, generator_loss,
                                   hinge_d_loss, vanilla_d_loss)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_patchgan_shape_layout_and_receptive_field():
    d = PatchDiscriminator(DiscriminatorConfig(), generator=_gen())
    x = torch.zeros(2, 3, 64, 64)
    assert d(x).shape == (2, 1, 6, 6)  # h/8 - 2
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    # each logit sees a 70x70 patch: perturbing a pixel far from a patch leaves its logit alone
    # (without normalisation, which pools statistics over the whole image)
    d = PatchDiscriminator(DiscriminatorConfig(norm="none"), generator=_gen())
    y = x.clone()
    y[:, :, 63, 63] = 1.0
    diff = (d(y) - d(x)).abs()[0, 0]
    assert diff[0, 0] == 0 and diff[-1, -1] > 0


def test_norm_choices_and_initialisation_are_seeded():
    for norm, cls in (("group", nn.GroupNorm), ("batch", nn.BatchNorm2d), ("none", None)):
        d = PatchDiscriminator(DiscriminatorConfig(norm=norm), generator=_gen())
        norms = [m for m in d.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))]
        assert len(norms) == (0 if cls is None else 3) and all(isinstance(m, cls) for m in norms)
    a = PatchDiscriminator(generator=_gen(3)).state_dict()
    b = PatchDiscriminator(generator=_gen(3)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    w = a["main.0.weight"]
    assert abs(w.std().item() - 0.02) < 0.003
    with pytest.raises(ConfigError, match="norm"):
        DiscriminatorConfig(norm="instance")
    with pytest.raises(InputError, match="expects images"):
        PatchDiscriminator()(torch.zeros(1, 1, 64, 64))


def test_group_norm_output_does_not_depend_on_the_batch():
    d = PatchDiscriminator(generator=_gen()).train()
    x = torch.randn(4, 3, 32, 32, generator=_gen(1))
    torch.testing.assert_close(d(x)[:1], d(x[:1]))


def test_hinge_and_vanilla_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * (0.25 + 0.5)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)
    assert hinge_d_loss(torch.full((3,), 1.0), torch.full((3,), -1.0)).item() == 0.0
    sp = torch.nn.functional.softplus
    expected = 0.5 * (sp(-real).mean() + sp(fake).mean())
    assert vanilla_d_loss(real, fake).item() == pytest.approx(expected.item())
    assert g_loss(fake).item() == pytest.approx(1.5)
    assert disc_factor(9, 10) == 0.0 and disc_factor(10, 10) == 1.0


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.randn(3, 4, generator=_gen(), requires_grad=True)
    a = torch.randn(3, 4, generator=_gen(1))
    rec = (w * a).sum()  # grad = a
    gan = (w * w).sum() * 0.5  # grad = w
    lam = adaptive_weight(rec, gan, w, disc_weight=0.5)
    expected = a.norm() / (w.detach().norm() + 1e-4) * 0.5
    torch.testing.assert_close(lam, expected)
    assert not lam.requires_grad and w.grad is None
    rec.backward()  # graphs were retained
    # clamped at 1e4 when the GAN gradient vanishes
    zero_gan = (w * 0).sum()
    assert adaptive_weight((w * a).sum(), zero_gan, w, 1.0).item() == ADAPTIVE_WEIGHT_MAX
    with torch.no_grad():
        detached = (w * a).sum()
    with pytest.raises(InputError, match="no_grad"):
        adaptive_weight(detached, gan, w)


def test_generator_loss_terms():
    torch.manual_seed(0)
    last = nn.Conv2d(4, 3, 3, padding=1)
    h = torch.randn(2, 4, 32, 32)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    rec = last(h)
    disc = PatchDiscriminator(DiscriminatorConfig(layers=2), generator=_gen())
    q = torch.tensor(0.3, requires_grad=True)
    fake_lpips = lambda a, b: (a - b).pow(2).mean((1, 2, 3))  # noqa: E731
    off = generator_loss(x, rec, q, perceptual=fake_lpips, logits_fake=disc(rec),
                         last_layer_weight=last.weight, gan_factor=0.0)
    l1 = (x - rec).abs().mean()
    p = fake_lpips(x, rec).mean()
    torch.testing.assert_close(off.total, l1 + p + 0.3)
    assert off.gan.item() == 0 and off.gan_weight.item() == 0
    on = generator_loss(x, rec, q, perceptual=fake_lpips, logits_fake=disc(rec),
                        last_layer_weight=last.weight, gan_factor=1.0)
    assert on.gan_weight.item() > 0
    torch.testing.assert_close(on.total, l1 + p + 0.3 + on.gan_weight * on.gan)
    on.total.backward()
    assert last.weight.grad is not None and q.grad.item() == pytest.approx(1.0)

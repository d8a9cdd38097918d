"""The SUNDAE nodes on tiny random models: model folders, invariants of each node, determinism."""

from pathlib import Path

import pytest
import torch

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.errors import InputError, MissingAssetError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import inference_dtype, read_config, save_model
from sundae_core.token_version import ENCODING_PARTS
from sundae_core.vqgan import VQGAN
from sundae_nodes import NODE_CLASS_MAPPINGS as N
from sundae_nodes.model_files import list_models, resolve_model
from sundae_nodes.tokens import BY_LABEL, EMBEDDED_CLASS_NAMES, EMBEDDED_CLASSES_TOOLTIP

VOCAB = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """f = 4 VQ-GAN and a 3-class prior in a model folder; an unconditional prior in a subfolder."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_model(folder / "vqgan.safetensors", VQGAN(VQGANConfig(
        resolution=32, ch=4, ch_mult=(1, 1, 1), num_res_blocks=1, attn_resolutions=(), mid_attention=False,
        z_channels=4, embed_dim=4, n_embed=VOCAB)))
    prior = HourglassConfig(vocab_size=VOCAB, dim=32, heads=2, depth=(1, 1, 1), shorten=4, num_classes=3)
    save_model(folder / "prior.safetensors", HourglassTransformer(prior))
    save_model(folder / "more" / "uncond.safetensors",
               HourglassTransformer(HourglassConfig(**{**prior.__dict__, "num_classes": 0})))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUNDAE_MODEL_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def vqgan(model_dir):
    return N["SundaeVQGANLoader"]().load("default")[0]


@pytest.fixture(scope="module")
def prior(model_dir):
    return N["SundaePriorLoader"]().load("default")[0]


def test_model_folder_listing_and_resolution(model_dir):
    # prior.safetensors / vqgan.safetensors are what `default` loads: listed once, as `default`
    assert list_models("prior") == ["default", "more/uncond.safetensors"]
    assert list_models("vqgan") == ["default"]
    assert resolve_model("prior.safetensors", "prior") == resolve_model("default", "prior")
    assert resolve_model("default", "prior") == (model_dir / "prior.safetensors").resolve()
    assert N["SundaePriorLoader"].INPUT_TYPES()["required"]["prior_name"][0] == list_models("prior")
    assert N["SundaeVQGANLoader"].IS_CHANGED("x") == ""
    with pytest.raises(MissingAssetError, match="not found in the sundae model folders"):
        resolve_model("nope.safetensors", "prior")
    with pytest.raises(MissingAssetError):
        resolve_model("../prior.safetensors", "prior")


def test_loaders_pick_the_device_and_the_inference_dtype_but_float32_for_the_encoder(vqgan, prior):
    """The inference dtype (bf16 where the device has bf16 kernels) everywhere but the VQ-GAN's
    encoder, which runs in float32 (VQGAN.cast_for_inference)."""
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = inference_dtype(expected)
    for name, parameter in [*vqgan.named_parameters(), *prior.named_parameters()]:
        encoding = name.startswith(ENCODING_PARTS)
        assert parameter.device.type == expected.type, name
        assert parameter.dtype == (torch.float32 if encoding else dtype), name
    assert not vqgan.training and not prior.training


def test_encode_decode_and_random_tokens(vqgan):
    image = torch.rand(2, 32, 24, 3)
    tokens = N["SundaeVQEncode"]().encode(vqgan, image)[0]
    assert tokens.shape == (2, 8, 6) and tokens.dtype == torch.int64
    decoded = N["SundaeVQDecode"]().decode(vqgan, tokens)[0]
    assert decoded.shape == (2, 32, 24, 3) and decoded.dtype == torch.float32 and decoded.device.type == "cpu"
    make = N["SundaeRandomTokens"]().make
    first, again, other = make(vqgan, 24, 32, 3, 7)[0], make(vqgan, 24, 32, 3, 7)[0], make(vqgan, 24, 32, 3, 8)[0]
    assert first.shape == (3, 8, 6) and torch.equal(first, again) and not torch.equal(first, other)
    odd = make(vqgan, 30, 32, 1, 0)[0]  # 30 wide: one token more, cropped back when decoded
    assert odd.shape == (1, 8, 8) and N["SundaeVQDecode"]().decode(vqgan, odd)[0].shape == (1, 32, 30, 3)


def test_any_image_size_is_padded_for_the_vqgan_and_comes_back_at_its_own_size(vqgan, prior):
    """38 x 30 with f = 4: encoded as 40 x 32 (edges repeated), the mask padded the same way as known
    pixels, and every node that makes tokens from tokens keeps the size, so decode crops it back."""
    image = torch.rand(1, 30, 38, 3)  # (b h w c)
    tokens = N["SundaeVQEncode"]().encode(vqgan, image)[0]
    assert tokens.shape == (1, 8, 10)
    padded = torch.nn.functional.pad(image.permute(0, 3, 1, 2), (0, 2, 0, 2), mode="replicate").permute(0, 2, 3, 1)
    assert torch.equal(tokens, N["SundaeVQEncode"]().encode(vqgan, padded)[0])
    mask = torch.zeros(1, 30, 38)
    mask[:, 29, 37] = 1  # the last pixel: its token is the bottom-right one, not a stretched neighbour
    hole = N["SundaeLatentMask"]().make(vqgan, tokens, mask)[0]
    assert hole.sum() == 1 and hole[0, 7, 9]
    noisy = N["SundaeCorrupt"]().corrupt(vqgan, tokens, 1.0, 3, latent_mask=hole)[0]
    sampled = N["SundaeSample"]().sample(prior, noisy, 1, 3, 1.0, 0.5, 0.8, False, 0, 0.0, "random",
                                         latent_mask=hole)[0]
    stepped = N["SundaeDenoiseStep"]().step(prior, sampled, 2, 1.0, 0.5, 0.0, "random", latent_mask=hole)[0]
    decoded = N["SundaeVQDecode"]().decode(vqgan, stepped)[0]
    assert decoded.shape == (1, 30, 38, 3)
    result = N["SundaeComposite"]().composite(image, decoded, mask, 0, 0)[0]
    assert torch.equal(result[mask == 0], image[mask == 0])
    grid = torch.randint(0, 8, (1, 8, 10))  # tokens made elsewhere carry no size: the whole grid
    assert N["SundaeVQDecode"]().decode(vqgan, grid)[0].shape == (1, 32, 40, 3)


def test_encoding_with_the_mask_keeps_what_is_under_it_out_of_every_token(vqgan):
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:16, 8:16] = 1
    other = image.clone()
    other[:, 8:16, 8:16] = 1 - other[:, 8:16, 8:16]  # another object under the mask
    encode = N["SundaeVQEncode"]().encode
    assert not torch.equal(encode(vqgan, image)[0], encode(vqgan, other)[0])  # the tokens read it ...
    assert torch.equal(encode(vqgan, image, mask)[0], encode(vqgan, other, mask)[0])  # ... unless hidden
    small = torch.zeros(1, 16, 16)
    small[:, 4:8, 4:8] = 1  # a mask of another size covers the image as it is
    assert torch.equal(encode(vqgan, image, small)[0], encode(vqgan, image, mask)[0])


def test_latent_mask_and_corrupt_keep_what_they_must(vqgan):
    tokens = N["SundaeRandomTokens"]().make(vqgan, 32, 32, 2, 0)[0]
    empty = N["SundaeLatentMask"]().make(vqgan, tokens, torch.zeros(1, 64, 64))[0]  # LoadImage without alpha
    assert empty.shape == (1, 8, 8) and not empty.any()
    pixels = torch.zeros(1, 32, 32)
    pixels[:, 5, 9] = 1  # one pixel marks its whole 4 x 4 patch
    hole = N["SundaeLatentMask"]().make(vqgan, tokens, pixels)[0]
    assert hole.sum() == 1 and hole[0, 1, 2]
    corrupt = N["SundaeCorrupt"]().corrupt
    assert torch.equal(corrupt(vqgan, tokens, 0.0, 3)[0], tokens)
    noisy = corrupt(vqgan, tokens, 1.0, 3, latent_mask=hole)[0]
    assert torch.equal(noisy[:, ~hole[0]], tokens[:, ~hole[0]])
    assert torch.equal(noisy, corrupt(vqgan, tokens, 1.0, 3, latent_mask=hole)[0])
    with pytest.raises(InputError, match="does not fit tokens"):
        corrupt(vqgan, tokens, 1.0, 3, latent_mask=torch.ones(1, 4, 4, dtype=torch.bool))


def test_sample_keeps_known_tokens_and_is_deterministic(vqgan, prior):
    tokens = N["SundaeRandomTokens"]().make(vqgan, 32, 32, 2, 0)[0]
    repaint = torch.zeros(1, 8, 8, dtype=torch.bool)
    repaint[:, 2:5, 3:6] = True
    label = N["SundaeClassLabel"]().make(prior, 2)[0]
    run = N["SundaeSample"]().sample
    args = dict(steps=6, temperature_start=1.0, temperature_end=0.5, proportion=0.8, self_stop=False,
                min_steps=0, guidance=1.5, selection="random", latent_mask=repaint, class_label=label)
    out = run(prior, tokens, 11, **args)[0]
    assert torch.equal(out[:, ~repaint[0]], tokens[:, ~repaint[0]])
    assert not torch.equal(out, tokens)
    assert torch.equal(out, run(prior, tokens, 11, **args)[0])
    assert not torch.equal(out, run(prior, tokens, 12, **args)[0])
    confident = run(prior, tokens, 11, **{**args, "selection": "confidence", "class_label": None, "guidance": 0.0})[0]
    assert torch.equal(confident[:, ~repaint[0]], tokens[:, ~repaint[0]])


def test_denoise_step_and_class_label(vqgan, prior, model_dir):
    tokens = N["SundaeRandomTokens"]().make(vqgan, 32, 32, 1, 0)[0]
    step = N["SundaeDenoiseStep"]().step
    assert torch.equal(step(prior, tokens, 1, 1.0, 0.0, 0.0, "random")[0], tokens)  # proportion 0: no change
    label = N["SundaeClassLabel"]().make(prior, 0)[0]
    moved = step(prior, tokens, 1, 1.0, 1.0, 2.0, "random", class_label=label)[0]
    assert not torch.equal(moved, tokens) and torch.equal(moved, step(prior, tokens, 1, 1.0, 1.0, 2.0, "random",
                                                                     class_label=label)[0])
    with pytest.raises(InputError, match="classes 0..2"):
        N["SundaeClassLabel"]().make(prior, 3)
    unconditional = N["SundaePriorLoader"]().load("more/uncond.safetensors")[0]
    with pytest.raises(InputError, match="unconditional"):
        N["SundaeClassLabel"]().make(unconditional, 0)


def test_random_class_draws_one_seeded_class_per_sample(vqgan, prior):
    """Uniform over the prior's 3 classes, one per sample of the tokens' batch, the same for the
    same seed; a prior without classes gets no label, so the graph runs unconditionally."""
    tokens = N["SundaeRandomTokens"]().make(vqgan, 32, 32, 64, 0)[0]
    make = N["SundaeRandomClass"]().make
    labels = make(prior, tokens, 5)[0]
    assert labels.shape == (64,) and labels.dtype == torch.long
    assert set(labels.tolist()) == {0, 1, 2}  # 64 draws over 3 classes miss one with p < 1e-10
    assert torch.equal(labels, make(prior, tokens, 5)[0]) and not torch.equal(labels, make(prior, tokens, 6)[0])
    run = N["SundaeSample"]().sample
    args = dict(steps=3, temperature_start=1.0, temperature_end=1.0, proportion=0.8, self_stop=False,
                min_steps=0, guidance=0.0, selection="random")
    few = tokens[:2]  # each sample follows its own label: changing the second leaves the first alone
    first = run(prior, few, 4, **args, class_label=torch.tensor([0, 1]))[0]
    second = run(prior, few, 4, **args, class_label=torch.tensor([0, 2]))[0]
    assert torch.equal(first[0], second[0]) and not torch.equal(first[1], second[1])
    unconditional = N["SundaePriorLoader"]().load("more/uncond.safetensors")[0]
    assert make(unconditional, tokens, 5) == (None,)


def test_composite_keeps_pixels_outside_the_mask_and_outpaint_canvas_grows(vqgan):
    original, generated = torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:20, 8:20] = 1
    out = N["SundaeComposite"]().composite(original, generated, mask, 4, 0)[0]  # seam band 0: as decoded
    assert torch.equal(out[mask == 0], original[mask == 0])
    assert torch.allclose(out[0, 14, 14], generated[0, 14, 14])
    matched = N["SundaeComposite"]().composite(original, generated, mask, 4)[0]  # the default seam band
    assert torch.equal(matched[mask == 0], original[mask == 0]) and not torch.equal(matched, out)
    canvas, new = N["SundaeOutpaintCanvas"]().grow(original, vqgan, 3, 0, 8, 0, 1.0)
    assert canvas.shape == (1, 32, 44, 3) and new.shape == (1, 32, 44)  # 3 rounds up to the factor 4
    assert torch.equal(canvas[:, :, 4:36], original) and new[:, :, 4:36].eq(0).all() and new[:, :, :4].eq(1).all()


def test_loader_stamps_name_the_model_and_its_content_never_its_path(model_dir, tmp_path, monkeypatch):
    stamp = N["SundaePriorLoader"].IS_CHANGED("more/uncond.safetensors")
    assert stamp.startswith("more/uncond.safetensors:sha256:") and str(model_dir) not in stamp and "/tmp" not in stamp
    folder = tmp_path / "mine"
    folder.mkdir()
    copy = folder / "prior.safetensors"
    copy.write_bytes((model_dir / "prior.safetensors").read_bytes())
    monkeypatch.setenv("SUNDAE_MODEL_DIR", str(folder))
    assert N["SundaePriorLoader"].IS_CHANGED("default") == N["SundaePriorLoader"].IS_CHANGED("prior.safetensors") \
        .replace("prior.safetensors:", "default:")
    before = N["SundaePriorLoader"].IS_CHANGED("default")
    copy.write_bytes((model_dir / "more" / "uncond.safetensors").read_bytes())  # retrained: new content
    assert N["SundaePriorLoader"].IS_CHANGED("default") != before


def test_the_embedded_default_is_listed_once_and_a_dangling_link_is_skipped(model_dir, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("SUNDAE_MODEL_DIR")
    assert list_models("vqgan") == ["default"] and list_models("prior") == ["default"]
    folder = tmp_path / "models"
    folder.mkdir()
    os.symlink(tmp_path / "gone.safetensors", folder / "broken.safetensors")
    monkeypatch.setenv("SUNDAE_MODEL_DIR", str(folder))
    assert list_models("prior") == ["default"] and N["SundaePriorLoader"].INPUT_TYPES()
    with pytest.raises(MissingAssetError):
        resolve_model("broken.safetensors", "prior")


def test_outpaint_margins_step_by_the_default_vqgan_factor(model_dir, monkeypatch):
    margin = N["SundaeOutpaintCanvas"].INPUT_TYPES()["required"]["left"][1]
    assert margin["step"] == 4 and margin["max"] % 4 == 0  # the folder's default: f = 4
    monkeypatch.delenv("SUNDAE_MODEL_DIR")  # the embedded default VQ-GAN: f = 32, not 16
    margin = N["SundaeOutpaintCanvas"].INPUT_TYPES()["required"]["bottom"][1]
    assert margin["step"] == 32 and margin["default"] == 0


def test_random_tokens_widgets_follow_the_default_vqgan_factor(model_dir, monkeypatch):
    size = N["SundaeRandomTokens"].INPUT_TYPES()["required"]["width"][1]
    assert size["step"] == size["min"] == 4 and size["default"] % 4 == 0  # the folder's default: f = 4
    monkeypatch.delenv("SUNDAE_MODEL_DIR")  # the embedded default VQ-GAN: f = 32
    size = N["SundaeRandomTokens"].INPUT_TYPES()["required"]["height"][1]
    assert size["step"] == size["min"] == 32 and size["default"] == 1024


def test_size_ceilings_come_before_allocating(vqgan):
    verdict = N["SundaeRandomTokens"].VALIDATE_VALUES(width=8192, height=8192, batch_size=64)
    assert "over the ceiling" in verdict and "SUNDAE_MAX_BATCH_PIXELS" in verdict
    assert N["SundaeRandomTokens"].VALIDATE_VALUES(width=1024, height=1024, batch_size=4) is True
    with pytest.raises(InputError, match="over the ceiling"):
        N["SundaeRandomTokens"]().make(vqgan, 8192, 8192, 64, 0)
    assert "outpaint canvas of 32769x32769" in N["SundaeOutpaintCanvas"].VALIDATE_VALUES(16384, 16384, 16384, 16384)
    with pytest.raises(InputError, match="outpaint canvas of 8228x8228"):
        N["SundaeOutpaintCanvas"]().grow(torch.rand(1, 32, 32, 3), vqgan, 4096, 4096, 4100, 4100, 1.0)


def test_sample_with_nothing_to_repaint_skips_sampling_and_says_so(vqgan, prior, caplog, monkeypatch):
    tokens = N["SundaeRandomTokens"]().make(vqgan, 32, 32, 1, 0)[0]
    empty = N["SundaeLatentMask"]().make(vqgan, tokens, torch.zeros(1, 64, 64))[0]  # an image without alpha
    monkeypatch.setattr(prior, "forward", lambda *a, **k: pytest.fail("the prior ran for nothing"))
    with caplog.at_level("WARNING", logger="sundae"):
        out = N["SundaeSample"]().sample(prior, tokens, 0, 100, 1.0, 0.7, 0.5, True, 10, 0.0, "random",
                                         latent_mask=empty)[0]
    assert torch.equal(out, tokens)
    assert "marks no token to repaint" in caplog.text and "mask editor" in caplog.text


def test_class_label_tooltip_lists_the_embedded_priors_classes_in_order():
    """The tooltip names the embedded prior's classes by index; a retrained default with other
    groups, or another order, must update it."""
    embedded = Path(__file__).resolve().parents[1] / "sundae_core" / "default_models" / "prior.safetensors"
    names = read_config(embedded, "prior").class_names
    assert len(names) == 9
    listed = [f"{i} {name.replace('_', ' & ')}" for i, name in enumerate(names)]  # people_body: 5 people & body
    positions = [EMBEDDED_CLASSES_TOOLTIP.find(item) for item in listed]
    assert -1 not in positions and positions == sorted(positions), (listed, EMBEDDED_CLASSES_TOOLTIP)
    assert EMBEDDED_CLASS_NAMES == names  # the class_name choices


def test_class_label_by_name(caplog):
    """class_name picks the prior's class of that name whatever the label; a name the prior lacks,
    or a prior without names, is refused with its classes; a label the name overrides is reported."""
    def label_of(prior, label, name):
        return N["SundaeClassLabel"]().make(prior, label, name)[0].tolist()

    named = _class_prior(class_names=("food_drink", "flags", "symbols"))
    assert label_of(named, 0, "flags") == [1] and label_of(named, 0, "symbols") == [2]
    assert label_of(named, 2, BY_LABEL) == [2]  # by index, as before the names
    assert "ignored" not in caplog.text
    assert label_of(named, 2, "flags") == [1]
    assert "label 2 is ignored, class_name 'flags' picks class 1" in caplog.text
    with pytest.raises(InputError, match=r"class_name: class 'people_body': this prior has classes 0..2 "
                                         r"\(0 food_drink.*set class_name to 'by label'"):
        label_of(named, 0, "people_body")
    with pytest.raises(InputError, match=r"class_name: class 'flags': this prior has classes 0..2;"):
        label_of(_class_prior(), 0, "flags")
    with pytest.raises(InputError, match="unconditional"):
        label_of(_class_prior(num_classes=0), 0, "flags")


def _class_prior(**kw) -> HourglassTransformer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return HourglassTransformer(HourglassConfig(**{"vocab_size": VOCAB, "dim": 16, "heads": 2, "depth": (1, 1, 1),
                                                       "num_classes": 3, **kw})).eval()

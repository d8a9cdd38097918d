"""The built-in replicas of ComfyUI core nodes: same definitions as ComfyUI's, same conventions."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sundae_core.errors import InputError
from sundae_core.graph import builtin_registry
from sundae_core.graph.context import RunContext, active
from sundae_core.graph.core_image_nodes import (EmptyImage, ImageBatch, ImageCompositeMasked, ImagePadForOutpaint,
                                                ImageScale, LoadImage, PreviewImage, SaveImage)
from sundae_core.graph.core_mask_nodes import FeatherMask, GrowMask, ImageToMask, LoadImageMask, MaskToImage

OBJECT_INFO = json.loads((Path(__file__).parent / "fixtures" / "comfyui" / "object_info_core_nodes.json").read_text())
FILE_LISTS = {("LoadImage", "image"), ("LoadImageMask", "image")}  # depend on the input folder's contents


def _plain(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", sorted(set(OBJECT_INFO) - {"KSampler"}))
def test_replica_has_exactly_comfyuis_definition(name):
    ours = _plain(builtin_registry().info(name))
    theirs = OBJECT_INFO[name]
    for section, inputs in theirs["input"].items():
        assert list(ours["input"][section]) == list(inputs), (name, section)
        for key, spec in inputs.items():
            if (name, key) in FILE_LISTS:
                assert isinstance(ours["input"][section][key][0], list) and ours["input"][section][key][1] == spec[1]
            else:
                assert ours["input"][section][key] == spec, (name, key)
    assert set(ours["input"]) == set(theirs["input"])
    for field in ("input_order", "output", "output_is_list", "output_name", "name", "display_name",
                  "description", "category", "output_node"):
        assert ours[field] == theirs[field], (name, field)


@pytest.fixture
def folders(tmp_path):
    context = RunContext(input_dir=tmp_path / "in", output_dir=tmp_path / "out", temp_dir=tmp_path / "tmp")
    context.input_dir.mkdir()
    with active(context):
        yield context


def test_load_image_mask_is_one_minus_alpha_and_64x64_zeros_without_alpha(folders):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[1:3, 2:4, 3] = 0  # the transparent hole
    Image.fromarray(rgba, "RGBA").save(folders.input_dir / "hole.png")
    Image.fromarray(rgba[..., :3], "RGB").save(folders.input_dir / "plain.png")
    assert LoadImage.INPUT_TYPES()["required"]["image"][0] == ["hole.png", "plain.png"]
    image, mask = LoadImage().load_image("hole.png")
    assert image.shape == (1, 6, 5, 3) and image.dtype == torch.float32
    assert torch.allclose(image[0, 0, 0], torch.tensor([200 / 255, 0, 0]))
    assert mask.shape == (1, 6, 5) and mask.sum() == 4 and mask[0, 1:3, 2:4].eq(1).all()
    _, mask = LoadImage().load_image("plain.png")
    assert mask.shape == (1, 64, 64) and mask.eq(0).all()
    alpha_mask = LoadImageMask().load_image("hole.png", "alpha")[0]
    assert torch.equal(alpha_mask, LoadImage().load_image("hole.png")[1])
    assert LoadImage.VALIDATE_INPUTS("gone.png").startswith("Invalid image file: gone.png")
    assert "outside its folder" in LoadImage.VALIDATE_INPUTS("../secret.png")


def test_save_image_counts_up_embeds_text_and_stays_inside_the_output_folder(folders):
    images = torch.rand(2, 4, 6, 3)
    result = SaveImage().save_images(images, "a/b", prompt={"1": {}}, extra_pnginfo={"workflow": {"nodes": []}})
    assert result["ui"]["images"] == [{"filename": "b_00001_.png", "subfolder": "a", "type": "output"},
                                      {"filename": "b_00002_.png", "subfolder": "a", "type": "output"}]
    again = SaveImage().save_images(images[:1], "a/b")["ui"]["images"][0]["filename"]
    assert again == "b_00003_.png"
    saved = Image.open(folders.output_dir / "a" / "b_00001_.png")
    assert json.loads(saved.text["prompt"]) == {"1": {}} and json.loads(saved.text["workflow"]) == {"nodes": []}
    # rounding makes save -> load lossless for 8-bit values
    (folders.input_dir / "again.png").write_bytes((folders.output_dir / "a" / "b_00001_.png").read_bytes())
    loaded = LoadImage().load_image("again.png")[0][0]
    assert torch.equal(loaded, (images[0] * 255).round() / 255)
    for prefix in ("../escape", "/tmp/abs", "a/../../x", ""):
        with pytest.raises(InputError):
            SaveImage().save_images(images, prefix)
    preview = PreviewImage().save_images(images[:1])["ui"]["images"][0]
    assert preview["type"] == "temp" and (folders.temp_dir / preview["filename"]).is_file()


def test_pad_for_outpaint_marks_the_border_and_feathers_inward():
    image = torch.rand(1, 20, 30, 3)
    canvas, mask = ImagePadForOutpaint().expand_image(image, left=8, top=0, right=0, bottom=4, feathering=4)
    assert canvas.shape == (1, 24, 38, 3) and torch.equal(canvas[:, :20, 8:], image)
    assert canvas[0, 22, 0, 0] == 0.5 and mask.shape == (1, 24, 38)
    assert mask[0, :, :8].eq(1).all() and mask[0, 20:].eq(1).all()
    inner = mask[0, :20, 8:]
    assert inner[0, 0] == 1.0 and inner[5, 1] == pytest.approx(0.5625)  # ((4 - 1) / 4) ** 2 from the left edge
    assert inner[0, 29] == 0.0 and inner[10, 15] == 0.0
    assert inner[19, 0] == 1.0 and inner[19, 29] == pytest.approx(0.5625)  # ComfyUI: far edges start at 1


def test_grow_and_feather_mask():
    dot = torch.zeros(1, 7, 7)
    dot[0, 3, 3] = 1
    assert GrowMask().expand_mask(dot, 1, True)[0].sum() == 5  # plus shape
    square = GrowMask().expand_mask(dot, 1, False)[0]
    assert square.sum() == 9 and torch.equal(GrowMask().expand_mask(square, -1, False)[0], dot)
    # ComfyUI's own numbers: left/top ramp k / n from the edge; right/bottom follow ComfyUI's indexing
    # (line -k takes (k + 1) / n for k = 0..n-1, and -0 is the first line), off-by-one included
    feathered = FeatherMask().feather(torch.ones(1, 4, 6), left=2, top=0, right=0, bottom=4)[0][0]
    rows = torch.tensor([0.25, 1.0, 0.75, 0.5])  # bottom = 4: row 0 takes 1/4, row 3 2/4, row 2 3/4
    cols = torch.tensor([0.5, 1.0, 1.0, 1.0, 1.0, 1.0])  # left = 2: 1/2, then 2/2
    assert torch.equal(feathered, rows[:, None] * cols[None])
    right = FeatherMask().feather(torch.ones(1, 2, 5), left=0, top=0, right=3, bottom=0)[0][0]
    assert torch.equal(right[0], torch.tensor([1 / 3, 1.0, 1.0, 1.0, 2 / 3]))
    assert torch.equal(right[0], right[1])


def test_scale_composite_batch_and_channels():
    image = torch.rand(1, 8, 16, 3)
    assert ImageScale().upscale(image, "bilinear", 0, 4, "disabled")[0].shape == (1, 4, 8, 3)
    assert ImageScale().upscale(image, "lanczos", 8, 8, "center")[0].shape == (1, 8, 8, 3)
    assert torch.equal(ImageScale().upscale(image, "nearest-exact", 0, 0, "disabled")[0], image)
    dest = EmptyImage().generate(6, 5, 1, 0xFF0000)[0]
    assert dest.shape == (1, 5, 6, 3) and dest[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    pasted = ImageCompositeMasked().composite(dest, torch.ones(1, 2, 2, 3), 5, 1, False)[0]
    assert pasted[0, 1, 5].tolist() == [1.0, 1.0, 1.0] and pasted[0, 3, 5].tolist() == [1.0, 0.0, 0.0]
    half = ImageCompositeMasked().composite(dest, torch.zeros(1, 5, 6, 3), 0, 0, False, torch.full((5, 6), 0.5))[0]
    assert torch.allclose(half, dest * 0.5)
    assert ImageBatch().batch(dest, image)[0].shape == (2, 5, 6, 3)
    assert MaskToImage().mask_to_image(torch.ones(2, 3))[0].shape == (1, 2, 3, 3)
    with pytest.raises(InputError, match="no alpha channel"):
        ImageToMask().image_to_mask(dest, "alpha")


def test_save_image_creates_files_exclusively_and_never_overwrites_another_writer(folders, monkeypatch):
    import sundae_core.graph.image_files as image_files

    other = folders.output_dir / "run_00001_.png"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another process's image")
    # another process claimed 00001 after this one counted the folder: the race of two sundae-runs
    monkeypatch.setattr(image_files, "_next_counter", lambda folder, stem, writes=None: 1)
    written = SaveImage().save_images(torch.rand(2, 4, 4, 3), "run")["ui"]["images"]
    assert [w["filename"] for w in written] == ["run_00002_.png", "run_00003_.png"]
    assert other.read_bytes() == b"another process's image"
    assert all(Image.open(folders.output_dir / w["filename"]).size == (4, 4) for w in written)


def test_save_image_caps_the_text_it_embeds(folders, caplog):
    huge = {"nodes": [{"id": i, "text": "x" * 1000} for i in range(3000)]}  # a 3 MB workflow
    with caplog.at_level("WARNING", logger="sundae"):
        name = SaveImage().save_images(torch.rand(1, 4, 4, 3), "big", prompt={"1": {}},
                                       extra_pnginfo={"workflow": huge})["ui"]["images"][0]["filename"]
    saved = folders.output_dir / name
    assert saved.stat().st_size < 100_000
    text = Image.open(saved).text
    assert json.loads(text["prompt"]) == {"1": {}} and "workflow" not in text
    assert "'workflow' text" in caplog.text and "not embedded" in caplog.text


@pytest.mark.parametrize("prefix", ["two\nlines", "tab\there", "../escape"])
def test_a_bad_prefix_is_refused_before_running(folders, prefix):
    assert SaveImage.VALIDATE_VALUES(prefix) is not True
    with pytest.raises(InputError):
        SaveImage().save_images(torch.rand(1, 2, 2, 3), prefix)
    assert not folders.output_dir.exists() or not any(folders.output_dir.rglob("*.png"))
    assert SaveImage.VALIDATE_VALUES("fine/name") is True


def _png_declaring(path, width, height):
    """A tiny PNG whose header declares width x height (its pixel data is never decoded)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    import zlib

    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("size", [(10000, 10000), (1, 178_000_000)])
def test_load_image_checks_the_pixel_ceiling_from_the_header_before_decoding(folders, size):
    _png_declaring(folders.input_dir / "bomb.png", *size)
    with pytest.raises(InputError, match=rf"{size[0]}x{size[1]} \(width x height\).*over the ceiling.*"
                                         "SUNDAE_MAX_IMAGE_PIXELS"):
        LoadImage().load_image("bomb.png")


def test_sixteen_bit_pngs_keep_their_greys(folders):
    levels = np.array([[0, 16448, 32896, 65535]], dtype=np.uint16)  # 0, 64, 128, 255 in 8 bits
    Image.fromarray(levels).save(folders.input_dir / "deep.png")
    assert Image.open(folders.input_dir / "deep.png").mode.startswith("I")
    image = LoadImage().load_image("deep.png")[0]
    assert torch.equal((image[0, 0, :, 0] * 255).round(), torch.tensor([0.0, 64.0, 128.0, 255.0]))
    mask = LoadImageMask().load_image("deep.png", "red")[0]
    assert torch.equal((mask[0, 0] * 255).round(), torch.tensor([0.0, 64.0, 128.0, 255.0]))


def test_load_image_batches_frames_of_the_first_size_and_skips_the_others(folders):
    # ComfyUI's LoadImage skips a frame of another size and keeps reading (sizes A, B, A -> batch of 2)
    red, green, blue = (Image.new("RGB", size, colour) for size, colour in
                        (((8, 6), (255, 0, 0)), ((4, 4), (0, 255, 0)), ((8, 6), (0, 0, 255))))
    red.save(folders.input_dir / "pages.tif", save_all=True, append_images=[green, blue], compression="raw")
    image, mask = LoadImage().load_image("pages.tif")
    assert image.shape == (2, 6, 8, 3) and mask.shape == (2, 64, 64)
    assert image[0, 0, 0].tolist() == [1.0, 0.0, 0.0] and image[1, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_load_image_takes_only_the_first_picture_of_an_mpo(folders):
    # a phone's multi-picture JPEG: ComfyUI excludes MPO from multi-frame loading
    first, second = Image.new("RGB", (8, 6), (250, 10, 10)), Image.new("RGB", (8, 6), (10, 10, 250))
    first.save(folders.input_dir / "photo.mpo", format="MPO", save_all=True, append_images=[second])
    assert Image.open(folders.input_dir / "photo.mpo").n_frames == 2
    image, mask = LoadImage().load_image("photo.mpo")
    assert image.shape == (1, 6, 8, 3) and mask.shape == (1, 64, 64)
    assert image[0, 0, 0, 0] > 0.9 and image[0, 0, 0, 2] < 0.1  # the red first picture

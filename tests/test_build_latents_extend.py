"""sundae-build-latents --extend and sundae-prepare-emoji --variants: adding images to a latent set
built before, with the labels meaning the same and the held-out set unchanged."""

import json
from pathlib import Path

import pytest
from PIL import Image

from trainers.data import build_latents
from trainers.data.image_data import is_validation
from trainers.data.latent_data import TokenSet
from trainers.data.prepare_emoji import curate, training_variants

from .test_build_latents_scales import _FakeVQGAN


def _folder(root: Path, layout: dict[str, int]) -> Path:
    for group, count in layout.items():
        (root / group).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (32, 32), (0, 0, 0)).save(root / group / f"{group}{i}.png")
    return root


def _build(tmp_path, images: Path, out: str, *extra: str) -> int:
    return build_latents.main(["--vqgan", "unused.safetensors", "--images", str(images), "--resolution", "32",
                               "--no-progress", "--labels-from-folders", "--out", str(tmp_path / out), *extra])


@pytest.fixture
def fake_vqgan(monkeypatch):
    monkeypatch.setattr(build_latents, "load_vqgan", lambda path, dtype=None: _FakeVQGAN())


def test_extend_lists_the_base_shards_then_the_new_ones_with_the_base_labels(tmp_path, fake_vqgan):
    assert _build(tmp_path, _folder(tmp_path / "base_images", {"a": 6, "b": 6, "c": 6}), "base") == 0
    assert _build(tmp_path, _folder(tmp_path / "more_images", {"c": 5}), "more", "--extend", str(tmp_path / "base")) == 0
    base = json.loads((tmp_path / "base" / "manifest.json").read_text())
    more = json.loads((tmp_path / "more" / "manifest.json").read_text())
    assert more["class_names"] == ["a", "b", "c"]  # not just ["c"], which would relabel c as class 0
    assert more["shards"]["train"][: len(base["shards"]["train"])] == [f"../base/{n}" for n in base["shards"]["train"]]
    assert more["shards"]["val"][: len(base["shards"]["val"])] == [f"../base/{n}" for n in base["shards"]["val"]]
    old, new = TokenSet(tmp_path / "base", "train"), TokenSet(tmp_path / "more", "train")
    added = sum(not is_validation(p) for p in (tmp_path / "more_images" / "c").iterdir())
    assert len(new) == len(old) + 2 * added  # each image and its mirror image
    assert new.labels[len(old):].tolist() == [2] * (2 * added)
    assert new.labels[: len(old)].tolist() == old.labels.tolist()


def test_extend_refuses_a_folder_that_is_not_a_class_of_the_base(tmp_path, fake_vqgan, capsys):
    assert _build(tmp_path, _folder(tmp_path / "base_images", {"a": 4, "b": 4}), "base") == 0
    assert _build(tmp_path, _folder(tmp_path / "more_images", {"z": 3}), "more", "--extend", str(tmp_path / "base")) == 1
    err = capsys.readouterr().err
    assert "folders z are not classes of --extend" in err and "a, b" in err


def test_extend_refuses_a_base_encoded_with_another_vqgan(tmp_path, fake_vqgan, capsys):
    assert _build(tmp_path, _folder(tmp_path / "base_images", {"a": 4}), "base") == 0
    manifest = tmp_path / "base" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "token_version": "other0000000"}))
    assert _build(tmp_path, _folder(tmp_path / "more_images", {"a": 3}), "more", "--extend", str(tmp_path / "base")) == 1
    assert "token version other0000000" in capsys.readouterr().err


def test_extend_refuses_another_val_fraction_than_the_base_was_split_with(tmp_path, fake_vqgan, capsys):
    """The extended set's build record names one --val-fraction: the base's split and the added
    images' must agree, or the record (which the hole set's check reads) misnames the base's."""
    assert _build(tmp_path, _folder(tmp_path / "base_images", {"a": 4}), "base", "--val-fraction", "0.2") == 0
    more = _folder(tmp_path / "more_images", {"a": 3})
    assert _build(tmp_path, more, "more", "--extend", str(tmp_path / "base")) == 1
    assert "split with --val-fraction 0.2, not 0.1" in capsys.readouterr().err
    assert _build(tmp_path, more, "more", "--extend", str(tmp_path / "base"), "--val-fraction", "0.2") == 0


def test_variants_are_the_left_out_skin_tones_of_training_emoji_only():
    def key_with(held_out: bool) -> str:
        return next(k for k in (f"1f{i:03x}" for i in range(4096)) if is_validation(Path(k)) == held_out)

    train, val = key_with(False), key_with(True)
    files = [Path(f"{k}{tone}.webp") for k in (train, val) for tone in ("", "-1f3fb", "-1f3ff")]
    table = {f.stem: "People & Body" for f in files}
    chosen = curate(files, table)
    assert {chosen[k][0].stem for k in (train, val)} == {train, val}  # the default tone is kept
    extra = training_variants(files, chosen)
    assert [(k, f.stem, g) for k, f, g in extra] == [(train, f"{train}-1f3fb", "People & Body"),
                                                    (train, f"{train}-1f3ff", "People & Body")]

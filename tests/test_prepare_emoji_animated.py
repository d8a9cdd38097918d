"""sundae-prepare-emoji --animated: frames of the animated Fluent emoji, on the training side only."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.data.image_data import emoji_key, is_validation
from trainers.data.prepare_emoji import ANIMATED, DATASOURCE, FLUENT, frame_indices, main, prepare


def _key(held_out: bool, skip: int = 0) -> str:
    keys = (k for k in (f"1f{i:03x}" for i in range(4096)) if is_validation(Path(k)) == held_out)
    for _ in range(skip):
        next(keys)
    return next(keys)


def _still(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (16, 16), (200, 200, 0, 255)).save(path)


def _animation(path: Path, n_frames: int) -> None:
    """Frame i is a flat grey of level 10 * i, so a written frame tells which it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.new("RGBA", (16, 16), (10 * i, 10 * i, 10 * i, 255)) for i in range(n_frames)]
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=40)


def _assets(root: Path) -> tuple[Path, str, str, str]:
    train, other, val = _key(False), _key(False, skip=1), _key(True)
    for key in (train, other, val):
        _still(root / FLUENT / f"{key}.webp")
    _still(root / FLUENT / f"{train}-1f3fb.webp")
    table = [{"unified": k.upper(), "category": "Smileys & Emotion"} for k in (train, other, val)]
    table[0]["skin_variations"] = {"1F3FB": {"unified": f"{train}-1f3fb".upper()}}
    (root / DATASOURCE).parent.mkdir(parents=True)
    (root / DATASOURCE).write_text(json.dumps(table))
    _animation(root / ANIMATED[0] / f"{train}.webp", 12)
    _animation(root / ANIMATED[1] / f"{train}-1f3fb.webp", 12)  # a skin-tone variant: left out
    _animation(root / ANIMATED[2] / f"{val}.webp", 12)  # held out: left out
    _still(root / ANIMATED[3] / f"{other}.webp")  # a single frame, no animation: left out
    return root, train, other, val


def test_frame_indices_spread_over_the_animation():
    assert frame_indices(72, 8) == [4, 13, 22, 31, 40, 49, 58, 67]
    assert frame_indices(3, 8) == [0, 1, 2]
    assert frame_indices(10, 1) == [5]


def test_frame_names_keep_their_emoji_key_and_split():
    key = _key(True)
    assert emoji_key(f"{key}-1f3fd__frame013") == key
    assert is_validation(Path(f"{key}__frame004.webp"))
    assert emoji_key("photo__frame_a") == "photo__frame_a"  # only a numbered suffix is a frame


def test_animated_writes_frames_of_training_emoji_in_their_default_tone(tmp_path):
    assets, train, _, _ = _assets(tmp_path / "node_modules")
    summary = prepare(assets, tmp_path / "out", animated=3)
    written = sorted((tmp_path / "out" / "smileys_emotion").iterdir())
    assert [p.name for p in written] == [f"{train}__frame{i:03d}.webp" for i in (2, 6, 10)]
    levels = [int(np.asarray(Image.open(p).convert("RGB"))[0, 0, 0]) for p in written]
    assert levels == [20, 60, 100]  # the frames asked for, not the first one three times
    assert all(emoji_key(p.stem) == train and not is_validation(p) for p in written)
    catalog = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert summary["emoji"] == 3 and summary["held_out"] == 0
    assert {c["key"] for c in catalog["files"]} == {train}


def test_animated_without_the_packages_says_what_to_install(tmp_path, capsys):
    assets, *_ = _assets(tmp_path / "node_modules")
    for folder in ANIMATED:
        for f in (assets / folder).glob("*"):
            f.unlink()
        (assets / folder).rmdir()
    assert main(["--assets", str(assets), "--out", str(tmp_path / "out"), "--animated", "2"]) == 1
    err = capsys.readouterr().err
    assert "npm install @lobehub/fluent-emoji-anim-1@1.0.0" in err and not (tmp_path / "out").exists()


def test_animated_and_variants_are_separate_sets(tmp_path, capsys):
    assets, *_ = _assets(tmp_path / "node_modules")
    assert main(["--assets", str(assets), "--out", str(tmp_path / "out"), "--animated", "2", "--variants"]) == 1
    assert "separate --out folders" in capsys.readouterr().err

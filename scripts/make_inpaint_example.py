"""Write workflows/input/inpaint_1024.png: a held-out Fluent Emoji 3D image (MIT) on white,
scaled to 1024 px, with a transparent hole (transparent = repaint, as ComfyUI's mask editor makes).

    python scripts/make_inpaint_example.py data/emoji_groups/smileys_emotion/1f62c.webp

1f62c (grimacing face) is in the held-out split (trainers/data/image_data.is_validation), so neither
default model has seen it. The hole covers the right eye: 9 x 9 tokens of the f = 32 VQ-GAN.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers.data.image_data import load_rgb  # noqa: E402

source = Path(sys.argv[1] if len(sys.argv) > 1 else "data/emoji_groups/smileys_emotion/1f62c.webp")
rgb = np.asarray(Image.fromarray(load_rgb(source, 256)).resize((1024, 1024), Image.BICUBIC))
alpha = np.full((1024, 1024), 255, np.uint8)
alpha[256:544, 544:832] = 0  # the hole: the right eye (9 x 9 tokens)
out = Path(__file__).resolve().parents[1] / "workflows" / "input" / "inpaint_1024.png"
Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out, optimize=True)
print(f"wrote {out}")

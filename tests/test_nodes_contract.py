"""The node pack's contract with ComfyUI: declarations, and the one bridge module to `comfy`."""

import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from sundae_core.graph.context import RunContext, active
from sundae_core.graph.registry import input_specs, node_info
from sundae_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_bridge


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_is_documented_and_well_formed(name):
    cls = NODE_CLASS_MAPPINGS[name]
    info = node_info(name, cls, NODE_DISPLAY_NAME_MAPPINGS[name])
    assert name.startswith("Sundae") and name == cls.__name__
    assert len(cls.DESCRIPTION) > 30 and cls.CATEGORY.startswith("sundae/")
    assert len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) > 0
    assert callable(getattr(cls, cls.FUNCTION))
    for spec in input_specs(info):
        assert spec.options.get("tooltip"), f"{name}.{spec.name} has no tooltip"
        if spec.type == "COMBO" and spec.choices:  # a file list may be empty (no prior adapter installed)
            assert spec.options.get("default") in spec.choices
        elif spec.type == "COMBO":
            assert name == "SundaeApplyPriorAdapter" and "default" not in spec.options
        elif spec.is_widget:
            assert "default" in spec.options
        if spec.name == "seed":
            assert spec.options["control_after_generate"] is True and spec.options["max"] == 2 ** 64 - 1
        if spec.type in ("INT", "FLOAT") and "min" in spec.options:
            assert spec.options["min"] <= spec.options["default"] <= spec.options["max"]


def test_pack_imports_no_comfy_module():
    assert not [m for m in sys.modules if m.split(".")[0] in ("comfy", "folder_paths")]
    assert comfy_bridge._optional_module("comfy.utils") is None


def test_outside_comfyui_progress_goes_to_the_executor_and_nothing_interrupts():
    seen = []
    context = RunContext(input_dir=None, output_dir=None, temp_dir=None, on_progress=lambda v, t: seen.append((v, t)))
    progress = comfy_bridge.Progress(3, preview=lambda tokens: pytest.fail("no previews outside ComfyUI"))
    progress.update(1, torch.zeros(1, 2, 2))
    with active(context):
        progress.sampler_callback({"step": 2, "total": 3, "tokens": torch.zeros(1, 2, 2)})
    assert seen == [(2, 3)]
    assert comfy_bridge.torch_device().type in ("cpu", "cuda")
    assert comfy_bridge.model_folders("sundae") is None and not comfy_bridge.register_model_folders("sundae", [])


@pytest.fixture
def fake_comfy(monkeypatch):
    """Just enough of ComfyUI's modules to watch what the bridge does with them."""
    state = types.SimpleNamespace(updates=[], checks=0, interrupt_after=None)

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            state.updates.append((value, total, preview))

    def check():
        state.checks += 1
        if state.interrupt_after is not None and state.checks > state.interrupt_after:
            raise InterruptedError("Processing interrupted")

    modules = {
        "comfy": types.ModuleType("comfy"),
        "comfy.utils": types.SimpleNamespace(ProgressBar=ProgressBar),
        "comfy.model_management": types.SimpleNamespace(get_torch_device=lambda: torch.device("cpu"),
                                                        throw_exception_if_processing_interrupted=check),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    comfy_bridge._optional_module.cache_clear()
    yield state
    comfy_bridge._optional_module.cache_clear()


def test_inside_comfyui_sampling_reports_progress_with_previews_and_honours_cancel(fake_comfy, monkeypatch):
    from sundae_core.config import HourglassConfig, VQGANConfig
    from sundae_core.hourglass import HourglassTransformer
    from sundae_core.vqgan import VQGAN

    monkeypatch.setattr(comfy_bridge, "PREVIEW_EVERY_S", 0.0)
    monkeypatch.setattr(comfy_bridge, "PREVIEW_SHARE", float("inf"))  # the time budget is tested below
    vqgan = VQGAN(VQGANConfig(resolution=8, ch=4, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(),
                              mid_attention=False, z_channels=4, embed_dim=4, n_embed=8)).eval()
    prior = HourglassTransformer(HourglassConfig(vocab_size=8, dim=16, heads=1, depth=(0, 1, 0), shorten=4)).eval()
    tokens = torch.zeros(1, 4, 4, dtype=torch.long)
    sample = NODE_CLASS_MAPPINGS["SundaeSample"]().sample
    args = dict(steps=3, temperature_start=1.0, temperature_end=1.0, proportion=0.5, self_stop=False,
                min_steps=0, guidance=0.0, selection="random")
    with torch.inference_mode():
        sample(prior, tokens, 0, vqgan=vqgan, **args)
    assert [(v, t) for v, t, _ in fake_comfy.updates] == [(1, 3), (2, 3), (3, 3), (3, 3)]  # then finish()
    kind, picture, size = fake_comfy.updates[0][2]
    assert kind == "JPEG" and isinstance(picture, Image.Image) and picture.size == (8, 8) and size == 512

    fake_comfy.updates.clear()
    fake_comfy.checks, fake_comfy.interrupt_after = 0, 1
    with pytest.raises(InterruptedError), torch.inference_mode():
        sample(prior, tokens, 0, **args)
    assert len(fake_comfy.updates) == 1  # cancelled between the first and second step


def _tiny_models():
    from sundae_core.config import HourglassConfig, VQGANConfig
    from sundae_core.hourglass import HourglassTransformer
    from sundae_core.vqgan import VQGAN

    vqgan = VQGAN(VQGANConfig(resolution=8, ch=4, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(),
                              mid_attention=False, z_channels=4, embed_dim=4, n_embed=8)).eval()
    prior = HourglassTransformer(HourglassConfig(vocab_size=8, dim=16, heads=1, depth=(0, 1, 0), shorten=4)).eval()
    return vqgan, prior


def test_previews_cost_at_most_a_tenth_of_sampling_time(fake_comfy, monkeypatch):
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(comfy_bridge, "time", types.SimpleNamespace(monotonic=lambda: clock.now))
    decoded = []

    def slow_preview(tokens):  # a megapixel decode: 1 s, against 0.1 s per sampling step
        clock.now += 1.0
        decoded.append(clock.now)
        return Image.new("RGB", (4, 4))

    progress = comfy_bridge.Progress(300, preview=slow_preview)
    for step in range(1, 301):
        clock.now += 0.1
        progress.update(step, torch.zeros(1, 2, 2))
    sampling = 300 * 0.1
    assert 0 < len(decoded) and len(decoded) * 1.0 <= 0.1 * sampling + 1e-9
    assert sum(1 for _, _, preview in fake_comfy.updates if preview) == len(decoded)


def test_no_preview_is_decoded_at_the_last_step(fake_comfy, monkeypatch):
    """VQ Decode decodes the final tokens right after sampling: a preview of them is wasted."""
    monkeypatch.setattr(comfy_bridge, "PREVIEW_EVERY_S", 0.0)
    monkeypatch.setattr(comfy_bridge, "PREVIEW_SHARE", float("inf"))
    decoded = []
    progress = comfy_bridge.Progress(3, preview=lambda tokens: decoded.append(1) or Image.new("RGB", (4, 4)))
    for step in (1, 2, 3):
        progress.update(step, torch.zeros(1, 2, 2))
    assert len(decoded) == 2 and fake_comfy.updates[-1] == (3, 3, None)
    progress = comfy_bridge.Progress(50, preview=lambda tokens: decoded.append(1) or Image.new("RGB", (4, 4)))
    tokens = torch.zeros(1, 2, 2)
    progress.sampler_callback({"step": 1, "total": 50, "tokens": tokens, "active": torch.tensor([True])})
    progress.sampler_callback({"step": 2, "total": 50, "tokens": tokens, "active": torch.tensor([False])})
    assert len(decoded) == 3 and fake_comfy.updates[-1] == (2, 50, None)  # every sample stopped itself


def test_the_first_preview_is_budgeted_with_the_measured_decode_time(fake_comfy, monkeypatch):
    from sundae_nodes import pixels

    clock = types.SimpleNamespace(now=0.0)
    fake_time = types.SimpleNamespace(monotonic=lambda: clock.now, perf_counter=lambda: clock.now)
    monkeypatch.setattr(comfy_bridge, "time", fake_time)
    monkeypatch.setattr(pixels, "time", fake_time, raising=False)
    vqgan = _tiny_models()[0]
    real_decode = vqgan.decode

    def slow_decode(tokens):  # a megapixel decode: 1 s, against 0.1 s per sampling step
        clock.now += 1.0
        return real_decode(tokens)

    vqgan.decode = slow_decode
    tokens = torch.zeros(1, 4, 4, dtype=torch.long)
    with torch.inference_mode():
        NODE_CLASS_MAPPINGS["SundaeVQDecode"]().decode(vqgan, tokens)  # an earlier run's decode: measured
        progress = comfy_bridge.Progress(30, preview=pixels.preview_decoder(vqgan))
        for step in range(1, 31):
            clock.now += 0.1
            progress.update(step, tokens)
    # 3 s of sampling leave 0.3 s for previews: a 1 s decode does not fit (budgeting it as one
    # 0.1 s step decoded it after 1 s of sampling, and previews took a quarter of the run)
    assert not any(preview for _, _, preview in fake_comfy.updates)


def test_previews_honour_comfyuis_preview_method(fake_comfy, monkeypatch):
    args = types.SimpleNamespace(preview_method=types.SimpleNamespace(value="none"), preview_size=256)
    monkeypatch.setitem(sys.modules, "comfy.cli_args", types.SimpleNamespace(args=args))
    comfy_bridge._optional_module.cache_clear()
    monkeypatch.setattr(comfy_bridge, "PREVIEW_SHARE", float("inf"))
    progress = comfy_bridge.Progress(2, preview=lambda tokens: pytest.fail("previews are off in ComfyUI"))
    progress.update(1, torch.zeros(1, 2, 2))
    args.preview_method = types.SimpleNamespace(value="auto")
    progress = comfy_bridge.Progress(2, preview=lambda tokens: Image.new("RGB", (4, 4)))
    progress.update(1, torch.zeros(1, 2, 2))
    assert fake_comfy.updates[0][2] is None and fake_comfy.updates[1][2][2] == 256


def _self_stopping_sample(prior):
    """confidence selection at proportion 0 looks at every token and takes none, so sampling stops
    itself after min_steps = 3 of 50 steps."""
    with torch.inference_mode():
        NODE_CLASS_MAPPINGS["SundaeSample"]().sample(prior, torch.zeros(1, 4, 4, dtype=torch.long), 0, steps=50,
                                                     temperature_start=1.0, temperature_end=1.0, proportion=0.0,
                                                     self_stop=True, min_steps=3, guidance=0.0, selection="confidence")


def test_the_progress_bar_is_full_when_sampling_stops_itself(fake_comfy):
    _self_stopping_sample(_tiny_models()[1])
    assert [v for v, _, _ in fake_comfy.updates] == [1, 2, 3, 50]


def test_the_executors_step_bar_is_full_when_sampling_stops_itself():
    seen = []
    context = RunContext(input_dir=None, output_dir=None, temp_dir=None, on_progress=lambda v, t: seen.append((v, t)))
    with active(context):
        _self_stopping_sample(_tiny_models()[1])
    assert seen == [(1, 50), (2, 50), (3, 50), (50, 50)]


def test_the_model_folder_lists_only_safetensors(tmp_path, monkeypatch):
    """ComfyUI's folder_paths semantics: a new type lists every file unless given extensions."""
    (tmp_path / "prior.safetensors").write_bytes(b"")
    (tmp_path / "MODEL_CARD.md").write_text("card")
    table = {}

    def add_model_folder_path(name, path, is_default=False):
        table.setdefault(name, ([], set()))[0].append(path)

    def get_filename_list(name):
        paths, extensions = table[name]
        files = [p.name for folder in paths for p in Path(folder).iterdir()]
        return sorted(f for f in files if not extensions or Path(f).suffix.lower() in extensions)

    folder_paths = types.SimpleNamespace(folder_names_and_paths=table, add_model_folder_path=add_model_folder_path,
                                         get_folder_paths=lambda name: list(table[name][0]), filename_list_cache={})
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    comfy_bridge._optional_module.cache_clear()
    try:
        assert comfy_bridge.register_model_folders("sundae", [tmp_path])
        assert get_filename_list("sundae") == ["prior.safetensors"]
    finally:
        comfy_bridge._optional_module.cache_clear()

"""cpu_memory.reuse_freed_memory: scoped, counted, restored; decodes run inside it."""

import torch

from sundae_core import cpu_memory
from sundae_core.config import VQGANConfig
from sundae_core.vqgan import VQGAN


def test_blocks_nest_and_the_policy_is_restored_after_the_last(monkeypatch):
    calls = []
    if cpu_memory._LIBC is None:  # not glibc: record what would be called anyway
        class Fake:
            def mallopt(self, *a): calls.append(("mallopt", *a))
            def malloc_trim(self, *a): calls.append(("malloc_trim", *a))
        monkeypatch.setattr(cpu_memory, "_LIBC", Fake())
    else:
        libc = cpu_memory._LIBC

        class Recording:
            def mallopt(self, *a):
                calls.append(("mallopt", *a))
                return libc.mallopt(*a)

            def malloc_trim(self, *a):
                calls.append(("malloc_trim", *a))
                return libc.malloc_trim(*a)
        monkeypatch.setattr(cpu_memory, "_LIBC", Recording())
    assert not cpu_memory.active()
    with cpu_memory.reuse_freed_memory():
        with cpu_memory.reuse_freed_memory():
            assert cpu_memory.active()
        assert cpu_memory.active() and ("malloc_trim", 0) not in calls
    assert not cpu_memory.active()
    assert calls == [("mallopt", cpu_memory.M_MMAP_MAX, 0),
                     ("mallopt", cpu_memory.M_TRIM_THRESHOLD, cpu_memory.DEFERRED_TRIM_THRESHOLD),
                     ("mallopt", cpu_memory.M_MMAP_MAX, cpu_memory.DEFAULT_MMAP_MAX),
                     ("mallopt", cpu_memory.M_TRIM_THRESHOLD, cpu_memory.DEFAULT_TRIM_THRESHOLD),
                     ("malloc_trim", 0)]


def test_an_exception_inside_still_restores():
    try:
        with cpu_memory.reuse_freed_memory():
            raise KeyError("cancelled")
    except KeyError:
        pass
    assert not cpu_memory.active()


def test_channels_last_decode_and_encode_equal_the_contiguous_layout():
    torch.manual_seed(0)
    config = VQGANConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1, n_embed=16, embed_dim=4, z_channels=4,
                         attn_resolutions=(8,), resolution=16, norm="channel")
    plain = VQGAN(config).eval()
    fast = VQGAN(config).eval()
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    tokens = torch.randint(0, 16, (2, 4, 4))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.inference_mode():
        out = fast.decode(tokens)
        # the reference: the same network with every tensor contiguous (NCHW)
        ref = plain.decoder(plain.post_quant_conv(plain.lookup_tokens(tokens))).float().clamp(-1, 1)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        ref_codes = plain.quantize.nearest(plain.quant_conv(plain.encoder(images)))
        assert torch.equal(fast.encode(images), ref_codes)

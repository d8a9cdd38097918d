"""`sundae-grow-decoder`: a VQ-GAN with a deeper decoder that decodes exactly as a trained one does.

    sundae-grow-decoder sundae_core/default_models/vqgan.safetensors --res-blocks 2 \
        --out runs/grown/vqgan_dec2.safetensors

Every decoder level gets res blocks appended after its own (`decoder_res_blocks` in the config;
each level has one block more than the number, as `num_res_blocks` counts). A new block starts as
the identity: its second convolution, the only layer that writes into the residual stream, is
zeroed, so `x + conv2(...)` returns x and the grown decoder draws the source's pixels (the CLI checks
this on random tokens before it writes the file). The encoder, `quant_conv` and the quantizer are
the source's, so the token version stays and every prior trained on the source's tokens fits the
grown VQ-GAN.

Why: the embedded decoder (6.7 M parameters, two res blocks a level, 8 channels at 1024 px) gained
0.0003 hole LPIPS per 500 steps by the end of its seventh stretch: flattening where a larger
decoder may still learn. Growing keeps the training it has had instead of starting a decoder over.
Fine-tune the output with the encoder frozen: `--set train.init=OUT --set train.freeze_encoder=true
--set model.decoder_res_blocks=N`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from sundae_core.cli import doc_summary, run_guarded
from sundae_core.config import VQGANConfig
from sundae_core.errors import InputError
from sundae_core.models import load_vqgan, save_model
from sundae_core.vqgan import VQGAN, ResnetBlock

from .grow_prior import grown_from_record, grown_parameters, load_source_weights


def identity_block_(block: ResnetBlock) -> ResnetBlock:
    """Zero the convolution that writes into the residual stream, so the block returns its input."""
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    return block


def grow(source: VQGAN, res_blocks: int, seed: int = 0) -> VQGAN:
    """The grown VQ-GAN (float32): the source's weights where they exist, each appended block
    initialised as the VQ-GAN's own init does and then made an identity."""
    have = source.config.decoder_blocks
    if res_blocks <= have:
        raise InputError(f"--res-blocks {res_blocks}: the source's decoder already has {have} a level; "
                         f"give more than {have} (growing never removes blocks)")
    torch.manual_seed(seed)  # nn.Module init draws from the global generator
    model = VQGAN(replace(source.config, decoder_res_blocks=res_blocks)).eval()
    load_source_weights(model, source, ResnetBlock, identity_block_, "VQ-GAN")
    return model


def added_parameters(init: str | Path, config: VQGANConfig) -> set[str]:
    """Names of the parameters of a `config` VQ-GAN that sundae-grow-decoder added to the one `init`
    grew from (its grown_from record names that VQ-GAN's decoder_res_blocks); ConfigError if `init`
    has no record."""
    return grown_parameters(init, config, VQGAN, "decoder_res_blocks", "sundae-grow-decoder")


def max_pixel_change(source: VQGAN, grown: VQGAN, seed: int = 0) -> float:
    """Largest |pixel difference| between the two decodings of random tokens (a 2 x 2 grid)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, source.config.n_embed, (2, 2, 2), generator=g)
    with torch.no_grad():
        return float((source.decode(tokens) - grown.decode(tokens)).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sundae-grow-decoder", description=doc_summary(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("source", help="VQ-GAN checkpoint whose decoder grows")
    parser.add_argument("--res-blocks", type=int, required=True,
                        help="res blocks per decoder level after growing, counted as num_res_blocks is "
                             "(the embedded VQ-GAN has 1)")
    parser.add_argument("--out", required=True, help="where to write the grown VQ-GAN (.safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new blocks' first layers (default 0)")
    args = parser.parse_args(argv)

    def body() -> int:
        source = load_vqgan(args.source, dtype=torch.float32)
        grown = grow(source, args.res_blocks, args.seed)
        change = max_pixel_change(source, grown)
        if change > 1e-5:
            raise RuntimeError(f"growing changed the decoded pixels by {change:.2g}: the new blocks are not identities")
        if grown.token_version != source.token_version:
            raise RuntimeError("growing changed the token version: the encoder's weights moved")
        save_model(args.out, grown, grown_from_record(args.source, decoder_res_blocks=source.config.decoder_blocks))
        load_vqgan(args.out)  # the file a user gets loads as a VQ-GAN, or this run fails here
        before = sum(p.numel() for p in source.decoder.parameters())
        after = sum(p.numel() for p in grown.decoder.parameters())
        print(f"wrote {args.out}: {args.res_blocks} res blocks a decoder level ({source.config.decoder_blocks} "
              f"before), decoder {after / 1e6:.2f} M parameters ({before / 1e6:.2f} M before), pixels within "
              f"{change:.1g} of the source's, token version {grown.token_version}; fine-tune it with "
              f"--set train.init={args.out} --set train.freeze_encoder=true "
              f"--set model.decoder_res_blocks={args.res_blocks}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())

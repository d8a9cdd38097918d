"""Datasets: image folders and splits, latent token shards, build_latents (images -> tokens), prepare_emoji."""

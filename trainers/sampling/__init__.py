"""Sampling CLIs: the sundae-demo app and sampler_flags, here as the flags shared by every CLI that samples."""

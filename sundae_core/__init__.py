"""SUNDAE over VQ-GAN tokens: composable primitives, models and a small graph executor."""

__version__ = "0.1.0"

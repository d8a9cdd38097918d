"""Evaluation CLIs (sundae-eval, sundae-eval-default, sundae-mnist-eval) and their metrics: Inception, FID/KID."""

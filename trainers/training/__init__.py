"""Training loops, losses, EMA, DDP, run folders; lpips sits here as the VQ-GAN perceptual loss (eval borrows it)."""

"""Training: safety-recovery augmentation, the token-wise constrained objective, trainers and attacks."""

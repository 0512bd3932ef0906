"""Training: the one training step (step.py), the run loop (trainer.py), optimizers, EMA, run folders."""

"""Training: the loop (on accelerate), optimisers and schedules, early stopping, checkpoints."""

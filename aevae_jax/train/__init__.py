"""Training: the pure compiled step and epoch, the per-epoch actions, the run's life,
run directories and checkpoints."""

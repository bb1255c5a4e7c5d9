"""Training: the pure compiled step and epoch (step), the stages (stages), the per-epoch
actions (actions), Ctrl-C (interrupts), the run's life (fit), run directories (rundir),
checkpoints (checkpoint), TensorBoard (summaries), devices (parallel) and reading a run
back (runs)."""

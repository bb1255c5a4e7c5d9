"""Evaluation: maps over whole splits, the metric catalogue and groups, samplers, the
domain classifier."""

"""Training, evaluation, checkpoints and distributed execution."""

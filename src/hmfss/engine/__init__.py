"""Engine: checkpoints, evaluation, training, distributed helpers."""

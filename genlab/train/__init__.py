"""Training loops: each owns its checkpoints and calls genlab.tracking once per epoch."""

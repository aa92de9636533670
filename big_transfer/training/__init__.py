"""Training: the train state and pure steps, optimizer, losses, the experiment built from a config,
the loop, checkpoints and their run record, evaluation and few-shot probes."""

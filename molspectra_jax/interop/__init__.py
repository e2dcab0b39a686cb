"""Reading models and checkpoints of other codebases (torchmd-net, the MolSpectra fork)."""

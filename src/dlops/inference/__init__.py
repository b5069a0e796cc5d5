"""After training: evaluate, predict and export a finished run (these modules import torch)."""

"""Training TNT with MindSpore: data, optimiser, compiled train step, checkpoints, loop."""

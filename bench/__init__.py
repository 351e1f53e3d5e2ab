"""Side-by-side benchmarks of the MindSpore TNT and torch_ref: ``python -m bench``."""

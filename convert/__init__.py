"""Checkpoint conversion between PyTorch (timm layouts) and MindSpore TNT."""

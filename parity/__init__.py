"""Run torch_ref and mindspore_tnt side by side and compare them block by block."""

"""Synthetic CT with known truth: phantoms (abdomen, chest), lesion insertion, the demo population."""

"""Injectors: each generates a layout-keeping image per class of a sample."""

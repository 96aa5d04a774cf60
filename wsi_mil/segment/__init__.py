"""Pixel-level lesion segmentation inside the tiles the MIL model flags (MONAI networks)."""

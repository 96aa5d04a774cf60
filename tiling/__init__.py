"""Slides to tile coordinates: opening slides, physical resolution, tissue detection, tile grids.

This package never imports torch: tiling a cohort needs only OpenSlide, NumPy and h5py.
"""

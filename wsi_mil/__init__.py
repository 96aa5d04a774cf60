"""Attention-MIL for whole-slide images: bags and labels, models, training, prediction,
heatmaps, exports, metrics and the ``wsi-mil`` command."""

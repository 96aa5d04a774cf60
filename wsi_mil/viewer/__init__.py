"""``wsi-mil view``: a local web viewer over a project's slides, heatmaps and outlines.

The slide is served as Deep Zoom tiles by OpenSlide's ``DeepZoomGenerator``; every overlay
(heat layers from ``heatmap.zarr`` or the predictions, explanation maps, segmentation, tissue and
lesion outlines) is served as PNG tiles on the *same* Deep Zoom pyramid, so OpenSeadragon
stacks them on the slide and they stay aligned at every zoom. Experts' ratings are written to
``ratings/<rater>.csv`` in the project folder, the only place the server writes.
"""

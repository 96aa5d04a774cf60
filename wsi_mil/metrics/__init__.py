"""Metrics: slide classification (:mod:`wsi_mil.metrics.slide`) and, in sibling modules,
tile/region-level evaluation. Kept import-light: import the submodule you need."""

"""The schema and YAML side of wsi-mil: parameter dataclasses checked and documented
(:mod:`~wsi_mil.config.schema`), where jobs run (:mod:`~wsi_mil.config.executor`) and the
``wsi-mil run`` configuration file (:mod:`~wsi_mil.config.pipeline`).

Nothing is imported here: every stage's ``params.py`` imports :mod:`wsi_mil.config.schema`
(standard library only), and must not pull in the pipeline schema, which imports them all.
"""

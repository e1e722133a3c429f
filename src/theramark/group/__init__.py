"""Group level: features table, harmonization, longitudinal models, inference, normalization and
brain–symptom links.

Modules: :mod:`~theramark.group.features` (the tidy features table), :mod:`~theramark.group.harmonize`
(ComBat), :mod:`~theramark.group.longitudinal` (mixed models, group × time effects),
:mod:`~theramark.group.inference` (FDR, max-T, NBS), :mod:`~theramark.group.normalize`
(distance to healthy controls), :mod:`~theramark.group.links` (brain–symptom correlations) and
:mod:`~theramark.group.pipeline` (the ``group_step`` of ``theramark run ... group``). Import from the
submodules; this package imports nothing heavy on its own.
"""

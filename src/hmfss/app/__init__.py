"""``hmfss app`` and the multi-class prediction path it shares with ``hmfss predict``.

:mod:`hmfss.app.pipeline` (support sets, encode once, segment) and :mod:`hmfss.app.outputs`
(label PNGs, overlays, masks, labels.json, zip) need no extra package; only
:mod:`hmfss.app.ui` imports Gradio (the ``hmfss[app]`` extra).
"""

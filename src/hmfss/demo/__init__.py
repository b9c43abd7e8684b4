"""``hmfss demo``: HSNet-FM vs HSNet-HM on the embedded synthetic benchmark (see pipeline.py)."""

"""CPU speed-ups of the model's data path, behind one seam: :class:`hmfss.fast.path.FastPath`.

The model's reference path (``hmfss.model.ReferencePath``) composes the plain operations of
``masking`` and ``correlation``; the CPU path gives the same maps and logits (bit for bit
where a rule selects values, to float rounding elsewhere) faster. docs/performance.md
explains each speed-up and what it costs.
"""

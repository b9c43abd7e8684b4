"""``hmfss study``: the demo's FM / IM / HM comparison repeated over seeds, with its spread."""

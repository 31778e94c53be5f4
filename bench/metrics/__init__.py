"""Numbers from a trained model: the metric table, the evaluation settings, one file per
metric family."""

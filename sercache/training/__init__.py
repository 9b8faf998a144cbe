"""Fitting heads: a run's config, the data of a fold in memory, epochs or closed form, one task, a run."""

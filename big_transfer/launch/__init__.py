"""Launching: TPU types, joining a multi-process job, one job per workdir."""

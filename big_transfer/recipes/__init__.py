"""Recipes: the run config schema (keys, defaults, checks) and the BiT recipes built on it."""

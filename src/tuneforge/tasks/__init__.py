"""Bundled demo tasks: generated data sets with a checker for the model's output."""

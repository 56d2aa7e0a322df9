"""Sweeps: what a `-m` run leaves (summary.py, its Hydra callback), the front of an
optimizing sweep (front.py, plot.py, recipes.py), its sweeper (optimize.py) and a sweep's
files read back (results.py)."""

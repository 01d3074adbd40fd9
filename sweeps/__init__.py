"""Grids of runs, each trial executed exactly once and resumably, here, on Ray or on Slurm.

spec (grid YAML -> trials), layout (paths in the runs directory), lock (per-trial lock with a
heartbeat), execute (the one per-trial function every backend runs), status (a grid's state from the
run store), backends/ (local, ray, slurm), search (Optuna inside one arm).
"""

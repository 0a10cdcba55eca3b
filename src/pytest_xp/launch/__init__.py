"""Submitters: Slurm job arrays and local arrays through submitit, and their options."""

"""Controller side: the xdist scheduler, crash records, GPUs per worker, ``--xp-plan``."""

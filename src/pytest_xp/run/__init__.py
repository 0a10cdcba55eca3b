"""Worker side: the pytest items, the per-process session, the ``xp`` handle, seeding, isolation."""

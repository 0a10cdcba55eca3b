"""What an experiment declares: decorators, discovery, grids, verdicts. Pure: no pytest."""

"""Reading results back for people: report data, renderers, plots, the terminal summary."""

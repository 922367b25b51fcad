"""diffroar's benchmarks: `python -m bench` runs them all, prints a table and writes
results/bench/summary.json. Every figure is measured beside its baseline in the same run."""

"""What every Snakemake job shares: its log, signals and one-line failures; fault points for tests."""

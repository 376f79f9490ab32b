"""Batch engines that run a per-case function over many cases: a local
process pool (default), Ray (local or cluster), and Slurm job arrays."""

"""Engines that run a per-case function over many cases: a local process
pool and Ray. Job scripts that call them through the CLI (Slurm arrays, a
Ray job) live in ``pipelines/`` at the repository root."""

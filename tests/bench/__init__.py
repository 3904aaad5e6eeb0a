"""Benchmarks (`nox -s bench`): each figure is printed as a ratio against a baseline
measured in the same run, on the same machine. They assert nothing about time."""

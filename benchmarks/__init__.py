"""Benchmarks for selic: rate-distortion on Kodak against common codecs, speed and memory, and ablations.

Every script writes what it measured, and on which machine, to `benchmarks/results/`;
`python -m benchmarks.run_all` regenerates all of it and the README sections built from it.
"""

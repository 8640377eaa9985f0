"""Training: data pipeline, training loop, checkpoints, export and widening (`selic train`, `selic export`).

A regular package (not a namespace one), so that setuptools' `find:` puts it in the wheel.
"""

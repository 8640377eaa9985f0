"""Training (`selic train`, and the checkpoint side of `selic export`): data, the loop, checkpoints, widening.

A regular package (not a namespace one), so that setuptools' `find:` puts it in the wheel.
"""

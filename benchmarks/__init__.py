"""Benchmarks of the toolkit against its floors and the tools users would pick (see README.md here).

A package so that ``python -m benchmarks.gpu`` runs and the scripts share ``benchmarks.common``;
every other script runs from the repository root as ``PYTHONPATH=. python benchmarks/NAME.py``.
"""

"""The click shells of `instrument-ai data/train/evaluate/experiment`: parse, call the library, print.

The only modules of `train/` that import click.
"""

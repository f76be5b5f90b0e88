"""Small example datasets: ``ln.examples.datasets``."""

from . import datasets

__all__ = ["datasets"]

"""The package's version (``ndeconv.__version__``), a leaf every floor may read."""

__version__ = "0.2.0"

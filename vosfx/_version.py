"""The package version (one place; read by pyproject and `vosfx --version`)."""

__version__ = "0.1.0"

"""The package version (kept in one place; ``deepalign.__version__`` and run metadata read it)."""

__version__ = "0.1.0"

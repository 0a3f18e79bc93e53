"""deepalign: measure, deepen and protect the depth of a language model's safety alignment."""

__version__ = "0.1.0"

from deepalign.errors import DataError, DeepAlignError  # noqa: E402

__all__ = ["DataError", "DeepAlignError", "__version__"]

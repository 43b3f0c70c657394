"""textvae: text variational autoencoders in PyTorch, with a classical Chinese poetry generator."""

from textvae.errors import TextVAEError

__version__ = "0.1.0"
__all__ = ["TextVAEError", "__version__"]

"""textvae: text variational autoencoders in PyTorch, with a classical Chinese poetry generator.

`textvae.load("poem")` gives a shipped or saved model with text-level verbs (textvae.pipeline); `TextVAE` is
the nn.Module itself.
"""

from textvae.errors import TextVAEError

__version__ = "0.1.0"

from textvae.pipeline import Pipeline, load  # noqa: E402  (after __version__: the CLI imports it from here)
from textvae.vae import TextVAE, VAEConfig  # noqa: E402

__all__ = ["Pipeline", "TextVAE", "TextVAEError", "VAEConfig", "__version__", "load"]

"""textvae: text variational autoencoders in PyTorch, with a classical Chinese poetry generator.

`textvae.load("poem")` gives a shipped or saved model with text-level verbs (textvae.pipeline); `TextVAE` is
the nn.Module itself. The pipeline is imported on first use: it brings in generation and the poetry package,
which training and the latent statistics never need.
"""

from textvae.errors import TextVAEError

__version__ = "0.1.0"

from textvae.vae import TextVAE, VAEConfig  # noqa: E402  (after __version__: the CLI imports it from here)


def __getattr__(name: str):
    if name in ("Pipeline", "load"):
        from textvae import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'textvae' has no attribute {name!r}")


__all__ = ["Pipeline", "TextVAE", "TextVAEError", "VAEConfig", "__version__", "load"]

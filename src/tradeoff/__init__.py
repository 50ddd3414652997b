"""tradeoff: measure, optimize and serve LLM inference on the accuracy-cost frontier."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tradeoff")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]

"""`tradeoff serve`: a configuration or a fitted policy behind an OpenAI-compatible endpoint,
with every served request measured and stored as a record."""

from tradeoff.serve.app import Limits, ServeApp, Served
from tradeoff.serve.server import ServeOptions, serve, served_configs

__all__ = ["Limits", "ServeApp", "ServeOptions", "Served", "serve", "served_configs"]

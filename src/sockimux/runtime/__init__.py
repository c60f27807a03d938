"""The asyncio runtime that drives the protocol core."""

from .listener import Listener
from .runner import Runner

__all__ = ["Listener", "Runner"]

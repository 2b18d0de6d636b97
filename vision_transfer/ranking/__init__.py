"""Scoring backbones before training: `vt rank` (LogME)."""
from .logme import logme

__all__ = ["logme"]

"""vision_transfer: transfer learning for vision."""
__version__ = "0.1.0"

"""Training engine: plain functions (`fit`, `train_one_epoch`, `evaluate`), transfer strategies,
checkpoints, devices and run logging."""
from .loop import FitResult, FitSettings, evaluate, fit, make_loader, train_one_epoch

__all__ = ["FitResult", "FitSettings", "evaluate", "fit", "make_loader", "train_one_epoch"]

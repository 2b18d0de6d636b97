"""Training engine: plain functions (`fit`, `train_one_epoch`, `evaluate`), transfer strategies,
checkpoints, devices and run logging."""
from .loop import FitResult, TransferSettings, evaluate, fit, make_loader, train_one_epoch

__all__ = ["FitResult", "TransferSettings", "evaluate", "fit", "make_loader", "train_one_epoch"]

"""Self-supervised pretraining: `vt pretrain IMAGE_DIR` -> RUN/backbone.safetensors for every task.

>>> from vision_transfer.pretrain import pretrain
>>> run = pretrain("unlabelled/", overrides=["pretrain.method=simclr", "train.epochs=20"])
>>> run.backbone_path     # model.weights=<this> in vt train / vt study / vt embed --weights
"""
from .methods import METHODS, build_method, byol_loss, nt_xent
from .run import PretrainResult, load_pretrain_config, pretrain, pretrain_from_config

__all__ = ["METHODS", "PretrainResult", "build_method", "byol_loss", "load_pretrain_config", "nt_xent",
           "pretrain", "pretrain_from_config"]

"""The YOLO-style head (`model.head=yolo`): anchor-free, decoupled, task-aligned assignment."""
from .loss import AssignerSettings, assign, yolo_losses
from .model import YOLODetector, yolo

__all__ = ["AssignerSettings", "YOLODetector", "assign", "yolo", "yolo_losses"]

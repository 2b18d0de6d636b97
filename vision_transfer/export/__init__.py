"""Export a trained model (ONNX, TorchScript) with its preprocessing, and run exported ONNX models.

    vt export classification --checkpoint runs/x/checkpoints/best.pt --format onnx --out model.onnx \\
        [--image-size 224] [--dynamic-batch]
    vt predict classification --checkpoint model.onnx photos/ --out preds/     # ONNX Runtime

`model.onnx.json` beside the model holds the task, classes, preprocessing, input layout and the
measured parity. See `spec.py` for the graph layouts per task.

Torch-free on import (the `vt` parser imports `export.cli`); the work is in `exporter` and `runtime`.
"""

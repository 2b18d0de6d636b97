"""Image similarity search and clustering on pretrained or fine-tuned backbone features.

>>> from vision_transfer.similarity import SimilarityIndex, embed, load_embedding_model
>>> model = load_embedding_model(backbone="tf_efficientnet_lite0", weights="imagenet", image_size=96)
>>> vectors, paths = embed(list_of_image_paths, model=model)
>>> index = SimilarityIndex(model.identity); index.add(vectors, paths, identity=model.identity)
>>> scores, ids = index.search(vectors[:3], k=5)          # cosine, best first
>>> index.save("my-index")

Names are imported lazily, so `vision_transfer.similarity.search` works without torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "embed": "embedding", "load_embedding_model": "embedding", "EmbeddingModel": "embedding",
    "model_from_identity": "embedding",
    "SimilarityIndex": "index",
    "exact_search": "search", "recall_at_k": "search", "estimate_recall": "search",
    "kmeans": "cluster", "cluster_index": "cluster",
    "knn_metrics": "knn_eval", "evaluate_knn": "knn_eval",
    "contact_sheet": "sheets", "montage": "sheets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

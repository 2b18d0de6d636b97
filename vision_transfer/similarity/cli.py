"""`vt embed`, `vt similar`, `vt cluster`: argparse Namespace in, exit status out.

`vt similar` writes into `--out`:
- `results.json`: `[{"query", "neighbors": [{"path", "score"}], "contact_sheet"}]`, k per query, best first
  (a query that is itself indexed is never its own neighbour);
- `contact_sheets/NNNN_<name>.png`: the query beside its k neighbours with scores;
- `search.json`: method, sizes, skipped queries and, for faiss, recall@k against exact search;
- `knn_eval.json`: when the index and every query sit in class folders (`ROOT/<class>/<image>`),
  precision@1, precision@k and kNN accuracy by folder name (see `knn_eval`). Querying an index
  with its own image folder gives the leave-one-out evaluation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..data.image import IMAGE_SUFFIXES, list_images
from ..errors import VTError
from ..files import write_json
from .cluster import cluster_index
from .embedding import DEFAULT_WEIGHTS, embed, load_embedding_model, model_from_identity
from .identity import describe_identity
from .index import SimilarityIndex, file_stat
from .knn_eval import class_folder_labels, metrics_from_results
from .search import recall_at_k, resolve_method


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files named by `inputs` (files, or folders searched recursively), absolute, de-duplicated."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images = list_images(p)
            if not images:
                raise VTError(f"no images found below {p} (looked for {', '.join(IMAGE_SUFFIXES)})")
            found += images
        elif p.is_file():
            found.append(p)
        else:
            raise VTError(f"{p} does not exist; give image files or folders of images")
    return list(dict.fromkeys(q.resolve() for q in found))


def _report_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][1]}")


def _embedding_model(args: argparse.Namespace, index: SimilarityIndex | None):
    """The index's own model when no model flag is given, else the flags' model (checked against the index)."""
    if args.checkpoint and (args.backbone or args.weights):
        raise VTError("give either --checkpoint CKPT or --backbone NAME --weights W, not both")
    layers = getattr(args, "layers", None)
    if index is not None and not (args.backbone or args.weights or args.checkpoint or args.image_size or layers):
        return model_from_identity(index.identity, device=args.device)
    model = load_embedding_model(backbone=args.backbone, weights=args.weights or DEFAULT_WEIGHTS,
                                 checkpoint=args.checkpoint, image_size=args.image_size, device=args.device,
                                 layers=layers)
    if index is not None:
        index.check_identity(model.identity, what=f"images for {args.out}")
    return model


def embed_command(args: argparse.Namespace) -> int:
    root = Path(args.image_dir)
    if not root.is_dir():
        raise VTError(f"{root} is not a folder; vt embed takes a folder of images")
    paths = collect_images([str(root)])
    out = Path(args.out)
    index = SimilarityIndex.load(out) if (out / "index.json").is_file() else None
    model = _embedding_model(args, index)
    index = index or SimilarityIndex(model.identity, dim=model.dim)
    gone = [p for p in index.paths if Path(p).is_relative_to(root.resolve()) and not Path(p).exists()]
    index.remove(gone)
    todo = index.stale(paths)
    skipped: list[tuple[str, str]] = []
    vectors, kept = embed(todo, model=model, batch_size=args.batch_size, skipped=skipped)
    index.add(vectors, kept, identity=model.identity, stats=[file_stat(p) for p in kept])
    _report_skipped(skipped)
    if len(index) == 0:
        raise VTError(f"no readable images below {root} ({len(skipped)} unreadable); nothing to index")
    index.save(out)
    print(f"embedded {len(kept)} new or changed image(s), {len(paths) - len(todo)} unchanged, "
          f"{len(gone)} removed; index {out}: {len(index)} images x {index.dim} ({describe_identity(index.identity)})")
    return 0


def _neighbors(index: SimilarityIndex, scores, ids) -> list[list[dict]]:
    return [[{"path": index.paths[i], "score": round(float(s), 6)} for s, i in zip(srow, irow) if i >= 0]
            for srow, irow in zip(scores, ids)]


def similar_command(args: argparse.Namespace) -> int:
    index = SimilarityIndex.load(args.index)
    if args.k < 1:
        raise VTError(f"--k must be at least 1, got {args.k}")
    queries = collect_images(args.queries)
    skipped: list[tuple[str, str]] = []
    vectors, kept = embed_queries(index, queries, device=args.device, skipped=skipped)
    _report_skipped(skipped)
    if not kept:
        raise VTError(f"none of the {len(queries)} query image(s) could be read")
    method = resolve_method(args.search, len(index))
    scores, ids = index.search(vectors, args.k, method=method, exclude=[str(p) for p in kept])
    out = Path(args.out)
    results = _write_results(out, kept, _neighbors(index, scores, ids))
    info = {"method": method, "k": args.k, "n_index": len(index), "n_queries": len(kept),
            "skipped": [{"path": p, "reason": r} for p, r in skipped], "model": index.identity}
    if method != "exact":
        info["recall_at_k_vs_exact"] = recall_vs_exact(index, vectors, kept, ids, args.k)
        print(f"{method} search: recall@{args.k} against exact search {info['recall_at_k_vs_exact']:.3f}")
    _maybe_knn_eval(out, index, kept, ids, scores, info)
    write_json(out / "search.json", info)
    print(f"{len(results)} queries x {args.k} neighbours -> {out / 'results.json'} and {out / 'contact_sheets'}/")
    return 0


def embed_queries(index: SimilarityIndex, queries: list[Path], *, device: str = "auto",
                  skipped: list[tuple[str, str]] | None = None) -> tuple[np.ndarray, list[Path]]:
    """Query vectors with the index's own model; an indexed, unchanged file reuses its stored vector."""
    row = {p: i for i, p in enumerate(index.paths)}
    known = {q: row[str(q)] for q in queries if str(q) in row and index.stats[row[str(q)]] == file_stat(q)}
    todo = [q for q in queries if q not in known]
    new_vectors, new_kept = np.zeros((0, index.dim), np.float32), []
    if todo:
        model = model_from_identity(index.identity, device=device)
        new_vectors, new_kept = embed(todo, model=model, skipped=skipped)
    fresh = dict(zip(new_kept, new_vectors))
    kept = [q for q in queries if q in known or q in fresh]
    vectors = np.stack([index.vectors[known[q]] if q in known else fresh[q] for q in kept]) if kept else new_vectors
    return vectors.astype(np.float32), kept


def recall_vs_exact(index: SimilarityIndex, vectors: np.ndarray, queries: list[Path], ids: np.ndarray, k: int,
                    *, max_queries: int = 200, seed: int = 0) -> float:
    """Recall@k of approximate results `ids` against exact search (same exclusions), on up to 200 queries."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(queries), min(len(queries), max_queries), replace=False))
    _, exact_ids = index.search(vectors[pick], k, method="exact", exclude=[str(queries[i]) for i in pick])
    return recall_at_k(ids[pick], exact_ids)


def _write_results(out: Path, queries: list[Path], neighbors: list[list[dict]]) -> list[dict]:
    from .sheets import contact_sheet

    results = []
    for i, (q, nb) in enumerate(zip(queries, neighbors)):
        sheet = out / "contact_sheets" / f"{i:04d}_{q.stem}.png"
        contact_sheet(q, [(n["path"], n["score"]) for n in nb], sheet)
        results.append({"query": str(q), "neighbors": nb, "contact_sheet": str(sheet.relative_to(out))})
    write_json(out / "results.json", results)
    return results


def _maybe_knn_eval(out: Path, index: SimilarityIndex, queries: list[Path], ids, scores, info: dict) -> None:
    index_labels = class_folder_labels(index.paths)
    query_labels = class_folder_labels(queries) if len(queries) > 1 else None
    if not index_labels or not query_labels or not set(query_labels) <= set(index_labels):
        return
    metrics = metrics_from_results(query_labels, ids, scores, index.paths)
    info["knn_eval"] = {k: v for k, v in metrics.items() if k != "per_class"}
    write_json(out / "knn_eval.json", metrics)
    print(f"kNN evaluation by class folder ({metrics['n_queries']} queries, k={metrics['k']}): "
          f"precision@1 {metrics['precision_at_1']:.3f}, precision@{metrics['k']} {metrics['precision_at_k']:.3f}, "
          f"kNN accuracy {metrics['knn_accuracy']:.3f}")


def cluster_command(args: argparse.Namespace) -> int:
    index = SimilarityIndex.load(args.index)
    result = cluster_index(index, args.k, args.out, seed=args.seed)
    sizes = ", ".join(str(c["size"]) for c in result["clusters"])
    print(f"{result['k']} clusters of {result['n_images']} images (sizes {sizes}); mean cosine to centroid "
          f"{result['mean_cosine_to_centroid']:.3f} -> {Path(args.out) / 'clusters.json'}")
    return 0

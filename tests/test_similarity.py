"""Similarity search and clustering: embed, index round trip, incremental add, model identity,
vt similar / vt cluster outputs, kNN metrics, faiss vs exact, bad input; and the issue's
acceptance check on real 10-class grey images (scikit-learn's handwritten digits)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vision_transfer.cli import main
from vision_transfer.errors import VTError
from vision_transfer.similarity import (SimilarityIndex, embed, estimate_recall, evaluate_knn, exact_search,
                                        kmeans, knn_metrics, load_embedding_model, recall_at_k)
from vision_transfer.similarity.search import search

SIZE = 40  # px of generated images; models embed at 32 px to stay fast


# -- data the tests make ---------------------------------------------------------------------
def draw_shape(kind: str, colour: tuple, *, size: int = SIZE, jitter: int = 0) -> Image.Image:
    im = Image.new("RGB", (size, size), (250, 250, 250))
    d, a, b = ImageDraw.Draw(im), 6 + jitter, size - 6 - jitter
    if kind == "circle":
        d.ellipse([a, a, b, b], fill=colour)
    elif kind == "square":
        d.rectangle([a, a, b, b], fill=colour)
    else:
        d.polygon([(size // 2, a), (a, b), (b, b)], fill=colour)
    return im


SHAPES = {"circles": ("circle", (220, 30, 30)), "squares": ("square", (30, 60, 220)),
          "triangles": ("triangle", (30, 170, 40))}


def write_shapes(root: Path, per_class: int = 3, *, offset: int = 0) -> list[Path]:
    """root/<class>/<class>_<i>.png: coloured shapes, one class per folder."""
    paths = []
    for cls, (kind, colour) in SHAPES.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(offset, offset + per_class):
            p = root / cls / f"{cls}_{i}.png"
            draw_shape(kind, colour, jitter=i % 4).save(p)
            paths.append(p)
    return paths


def write_digits_folder(root: Path, *, per_class: int, split: str, size: int = 32) -> list[Path]:
    """Real handwritten digits (scikit-learn's 1,797 8x8 images, 10 classes) as grey PNGs in
    root/<digit>/. `split` "index" takes each class's first `per_class` images, "query" its last
    `per_class` (every class has at least 174), so the two never share an image while
    per_class <= 87."""
    from sklearn.datasets import load_digits

    assert split in ("index", "query") and per_class <= 87
    digits = load_digits()
    paths = []
    for label in range(10):
        rows = np.flatnonzero(digits.target == label)
        rows = rows[:per_class] if split == "index" else rows[-per_class:]
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        for r in rows:
            grey = (digits.images[r] / 16.0 * 255).astype(np.uint8)
            p = root / str(label) / f"{r:04d}.png"
            Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BICUBIC).save(p)
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def lite0():
    return load_embedding_model(backbone="tf_efficientnet_lite0", weights="imagenet", image_size=32, device="cpu")


def run_vt(*argv) -> int:
    return main([str(a) for a in argv])


# -- embed, index ------------------------------------------------------------------------------
def test_embed_returns_unit_rows_in_path_order(tmp_path, lite0):
    paths = write_shapes(tmp_path, per_class=2)
    vectors, kept = embed(paths, model=lite0, batch_size=4, progress=False)
    assert vectors.shape == (6, lite0.backbone.num_features) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert kept == paths
    again, _ = embed(paths[:1], model=lite0, progress=False)
    np.testing.assert_allclose(again[0], vectors[0], atol=1e-5)  # batch size does not change a vector


def test_corrupt_image_is_a_counted_skip(tmp_path, lite0, capsys):
    write_shapes(tmp_path / "imgs", per_class=1)
    (tmp_path / "imgs" / "circles" / "broken.png").write_bytes(b"not a png at all")
    skipped = []
    _, kept = embed(sorted((tmp_path / "imgs").rglob("*.png")), model=lite0, skipped=skipped, progress=False)
    assert len(kept) == 3 and len(skipped) == 1 and "broken.png" in skipped[0][0]
    assert run_vt("embed", tmp_path / "imgs", "--image-size", 32, "--out", tmp_path / "idx") == 0
    assert "skipped 1 unreadable" in capsys.readouterr().out
    assert len(SimilarityIndex.load(tmp_path / "idx")) == 3


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_vt("embed", tmp_path / "empty", "--out", tmp_path / "idx") == 2
    err = capsys.readouterr().err.strip()
    assert "no images found" in err and "\n" not in err
    assert run_vt("similar", "--index", tmp_path / "nowhere", tmp_path / "empty", "--out", tmp_path / "o") == 2
    assert "not a similarity index" in capsys.readouterr().err


def test_index_round_trip(tmp_path, lite0):
    paths = write_shapes(tmp_path / "imgs", per_class=2)
    vectors, kept = embed(paths, model=lite0, progress=False)
    index = SimilarityIndex(lite0.identity)
    index.add(vectors, kept, identity=lite0.identity)
    index.save(tmp_path / "idx")
    loaded = SimilarityIndex.load(tmp_path / "idx")
    assert loaded.paths == [str(p) for p in kept] and loaded.dim == vectors.shape[1]
    np.testing.assert_array_equal(loaded.vectors, vectors)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["identity"]["backbone"] == "tf_efficientnet_lite0" and meta["identity"]["image_size"] == 32
    assert meta["identity"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    scores, ids = loaded.search(vectors[:2], k=3, identity=lite0.identity)
    assert ids[:, 0].tolist() == [0, 1] and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_incremental_embed_only_new_or_changed_files(tmp_path, capsys):
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    write_shapes(imgs, per_class=2)
    assert run_vt("embed", imgs, "--image-size", 32, "--out", idx) == 0
    assert "embedded 6 new" in capsys.readouterr().out
    write_shapes(imgs, per_class=1, offset=5)                       # 3 new files
    draw_shape("circle", (0, 0, 0)).save(imgs / "circles" / "circles_0.png")   # 1 changed file
    (imgs / "squares" / "squares_1.png").unlink()                  # 1 removed file
    before = SimilarityIndex.load(idx)
    assert run_vt("embed", imgs, "--out", idx) == 0                # no flags: the index's own model
    out = capsys.readouterr().out
    assert "embedded 4 new or changed" in out and "5 unchanged" not in out and "1 removed" in out
    after = SimilarityIndex.load(idx)
    assert len(after) == 8 and len(set(after.paths)) == 8
    keep = str((imgs / "triangles" / "triangles_0.png").resolve())
    np.testing.assert_array_equal(after.vectors[after.paths.index(keep)], before.vectors[before.paths.index(keep)])


def test_model_mismatch_is_refused(tmp_path, lite0, capsys):
    imgs, idx = tmp_path / "imgs", tmp_path / "idx"
    write_shapes(imgs, per_class=1)
    assert run_vt("embed", imgs, "--image-size", 32, "--out", idx) == 0
    capsys.readouterr()
    assert run_vt("embed", imgs, "--image-size", 48, "--out", idx) == 2
    err = capsys.readouterr().err.strip()
    assert "index was built with" in err and "\n" not in err
    other = load_embedding_model(backbone="mobilenet_v3_small", weights="none", image_size=32, device="cpu")
    index = SimilarityIndex.load(idx)
    with pytest.raises(VTError, match="index was built with"):
        index.search(np.zeros((1, index.dim), np.float32), identity=other.identity)
    with pytest.raises(VTError, match="index was built with"):
        index.add(np.zeros((1, index.dim), np.float32), ["x.png"], identity=other.identity)
    index.search(np.zeros((1, index.dim), np.float32), identity=lite0.identity)  # same model: fine


def test_checkpoint_model_identity_follows_the_file(tmp_path, monkeypatch, capsys):
    """--checkpoint: the index records the checkpoint's SHA-256; a changed file is refused at query time."""
    from vision_transfer.backbones import create_backbone
    from vision_transfer.engine import checkpoint

    def fake_load(path):
        bb = create_backbone("tf_efficientnet_lite0", weights="imagenet")
        return bb, bb.preprocessing, 32

    monkeypatch.setattr(checkpoint, "load_backbone_from_checkpoint", fake_load)
    imgs, idx, ckpt = tmp_path / "imgs", tmp_path / "idx", tmp_path / "best.pt"
    write_shapes(imgs, per_class=1)
    ckpt.write_bytes(b"trained weights v1")
    assert run_vt("embed", imgs, "--checkpoint", ckpt, "--out", idx) == 0
    ident = SimilarityIndex.load(idx).identity
    assert ident["weights"] == "checkpoint:best.pt" and ident["image_size"] == 32 and len(ident["weights_sha256"]) == 64
    assert run_vt("similar", "--index", idx, imgs / "circles", "--k", 2, "--out", tmp_path / "o1") == 0
    ckpt.write_bytes(b"trained weights v2")
    capsys.readouterr()
    assert run_vt("similar", "--index", idx, tmp_path / "o1" / "contact_sheets", "--out", tmp_path / "o2") == 2
    assert "cannot be rebuilt" in capsys.readouterr().err


# -- vt similar, vt cluster --------------------------------------------------------------------
def test_similar_writes_results_contact_sheets_and_knn_eval(tmp_path, capsys):
    imgs, idx, out = tmp_path / "imgs", tmp_path / "idx", tmp_path / "out"
    write_shapes(imgs, per_class=3)
    queries = write_shapes(tmp_path / "queries", per_class=1, offset=7)
    assert run_vt("embed", imgs, "--image-size", 32, "--out", idx) == 0
    assert run_vt("similar", "--index", idx, tmp_path / "queries", "--k", 4, "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["query"] for r in results] == [str(q.resolve()) for q in queries]
    for r in results:
        assert len(r["neighbors"]) == 4 and set(r["neighbors"][0]) == {"path", "score"}
        scores = [n["score"] for n in r["neighbors"]]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
        assert (out / r["contact_sheet"]).is_file()
    sheet = Image.open(out / results[0]["contact_sheet"])
    assert sheet.width > 4 * sheet.height  # query + 4 neighbours in one row
    knn = json.loads((out / "knn_eval.json").read_text())
    assert knn["n_queries"] == 3 and knn["k"] == 4 and knn["precision_at_1"] == 1.0  # shapes are easy
    assert "precision@1" in capsys.readouterr().out


def test_similar_never_returns_the_query_itself(tmp_path):
    imgs, idx, out = tmp_path / "imgs", tmp_path / "idx", tmp_path / "out"
    write_shapes(imgs, per_class=2)
    assert run_vt("embed", imgs, "--image-size", 32, "--out", idx) == 0
    assert run_vt("similar", "--index", idx, imgs, "--k", 10, "--out", out) == 0   # leave-one-out
    for r in json.loads((out / "results.json").read_text()):
        assert len(r["neighbors"]) == 5 and r["query"] not in {n["path"] for n in r["neighbors"]}
    assert json.loads((out / "search.json").read_text())["knn_eval"]["n_queries"] == 6


def test_similar_with_faiss_reports_recall_against_exact(tmp_path):
    pytest.importorskip("faiss")
    imgs, idx, out = tmp_path / "imgs", tmp_path / "idx", tmp_path / "out"
    write_shapes(imgs, per_class=2)
    assert run_vt("embed", imgs, "--image-size", 32, "--out", idx) == 0
    assert run_vt("similar", "--index", idx, imgs, "--k", 3, "--search", "hnsw", "--out", out) == 0
    info = json.loads((out / "search.json").read_text())
    assert info["method"] == "hnsw" and info["recall_at_k_vs_exact"] == 1.0  # tiny: the graph is exact
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_cluster_writes_clusters_json_and_montages(tmp_path):
    imgs, idx, out = tmp_path / "imgs", tmp_path / "idx", tmp_path / "clusters"
    write_shapes(imgs, per_class=3)
    assert run_vt("embed", imgs, "--image-size", 32, "--out", idx) == 0
    assert run_vt("cluster", idx, "--k", 3, "--seed", 1, "--out", out) == 0
    result = json.loads((out / "clusters.json").read_text())
    assert result["k"] == 3 and sum(c["size"] for c in result["clusters"]) == 9
    for c in result["clusters"]:
        assert (out / c["montage"]).is_file() and c["medoid"] == c["members"][0]["path"]
    assert run_vt("cluster", idx, "--k", 10, "--out", out) == 2  # more clusters than images


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3]
    x = np.concatenate([c + 0.05 * rng.standard_normal((20, 8)) for c in centres]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels, cents = kmeans(x, 3, seed=3)
    truth = np.repeat(np.arange(3), 20)
    assert len({(t, l) for t, l in zip(truth, labels)}) == 3  # a one-to-one match of blobs and clusters
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(kmeans(x, 3, seed=3)[0], labels)


# -- kNN metrics, search ---------------------------------------------------------------------
def test_knn_metrics_on_a_hand_made_case():
    m = knn_metrics(["a", "a", "b", "b"],
                    [["a", "b", "b"], ["b", "a", "a"], ["b", "b", "a"], ["a", "a", "b"]],
                    np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7], [0.9, 0.8, 0.7], [0.9, 0.8, 0.7]]))
    assert m["precision_at_1"] == 0.5
    assert m["precision_at_k"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3 + 1 / 3) / 4)
    assert m["knn_accuracy"] == 0.5          # votes: b, a, b, a
    assert m["per_class"] == {"a": 0.5, "b": 0.5} and m["k"] == 3
    tie = knn_metrics(["a"], [["b", "a"]], np.array([[0.9, 0.1]]))   # one vote each: similarity decides
    assert tie["knn_accuracy"] == 0.0


def test_evaluate_knn_leave_one_out():
    index = SimilarityIndex({"backbone": "hand", "image_size": 1}, dim=2)
    vecs = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [0.8, 0.6]], np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index.add(vecs, ["r/x/1.png", "r/x/2.png", "r/y/3.png", "r/y/4.png", "r/y/5.png"], stats=[[0, 0]] * 5)
    m = evaluate_knn(index, k=1)
    assert m["n_queries"] == 5 and m["precision_at_1"] == pytest.approx(4 / 5)  # y/5 is nearest to an x


def test_exact_search_is_right_and_pads():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    scores, ids = exact_search(x, q, 5)
    np.testing.assert_array_equal(ids, np.argsort(-(q @ x.T), axis=1)[:, :5])
    scores, ids = exact_search(x[:3], q, 5)
    assert (ids[:, 3:] == -1).all() and np.isinf(scores[:, 3:]).all() and (ids[:, :3] >= 0).all()
    with pytest.raises(VTError, match="unknown search method"):
        search(x, q, 3, method="annoy")


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_faiss_agrees_with_exact_search(method, tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32))
    x = (centres[rng.integers(20, size=3000)] + 0.3 * rng.standard_normal((3000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(3000, 100, replace=False)] + 0.05 * rng.standard_normal((100, 32)).astype(np.float32)
    _, exact_ids = exact_search(x, q, 10)
    scores, ids = search(x, q, 10, method=method, cache_dir=tmp_path)
    assert recall_at_k(ids, exact_ids) >= 0.9
    assert estimate_recall(x, q, 10, ids) == pytest.approx(recall_at_k(ids, exact_ids))
    assert np.all(np.diff(scores, axis=1) <= 1e-5)
    assert len(list(tmp_path.glob(f"faiss-{method}-*.index"))) == 1       # cached for the next search
    np.testing.assert_array_equal(search(x, q, 10, method=method, cache_dir=tmp_path)[1], ids)


# -- acceptance on real data -------------------------------------------------------------------
def test_digits_precision_at_1_with_packaged_lite0(tmp_path):
    """The issue's check, scaled to stay fast: 10 classes of real grey digits, ImageNet Lite0 at
    96 px, disjoint index and query images; precision@1 by class folder >= 0.75."""
    write_digits_folder(tmp_path / "index", per_class=30, split="index")
    write_digits_folder(tmp_path / "query", per_class=10, split="query")
    assert run_vt("embed", tmp_path / "index", "--backbone", "tf_efficientnet_lite0", "--weights", "imagenet",
                  "--image-size", 96, "--out", tmp_path / "idx") == 0
    assert run_vt("similar", "--index", tmp_path / "idx", tmp_path / "query", "--k", 5,
                  "--out", tmp_path / "out") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    p1 = np.mean([Path(r["query"]).parent.name == Path(r["neighbors"][0]["path"]).parent.name for r in results])
    knn = json.loads((tmp_path / "out" / "knn_eval.json").read_text())
    assert len(results) == 100 and knn["precision_at_1"] == pytest.approx(p1)
    assert p1 >= 0.75, p1

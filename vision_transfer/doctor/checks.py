"""The checks of `vt doctor`, as plain functions over lists of image paths and labels.

Findings are dicts `{"severity": "error" | "warning", "kind", "message", "items": [...]}`:
an error is something training would hit (a file it skips, a box it drops, a val image also in
train that flatters the numbers); a warning is odd but usable (grey or CMYK images, sizes far from
the rest, EXIF rotation, duplicates inside a split, class imbalance).

Perceptual hash: dHash (Krawetz), 16x16 brightness gradients of a 17x16 grey thumbnail -> 256 bits.
Measured on 800 ELPV cells (all alike: grey cells with bus bars), 320k pairs of different cells: the
64-bit 8x8 dHash put 507 pairs within 4 bits (useless there), the 256-bit one 1 pair within 4 and 4
within 8 (median 109); the same cell re-encoded as JPEG q85 is 6 bits away, resized 5, brightened 0.
So the hash only proposes pairs (<= NEAR_BITS); a pair is confirmed on 32x32 grey thumbnails, each
z-scored: mean absolute difference 0.32-0.39 for those look-alike cells, <= 0.01 for the re-encoded,
resized and brightened copies. <= SAME_Z is "the same picture" (train/val leakage: an error),
<= NEAR_Z a near duplicate.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.image import BadImage, probe_image
from ..report import show_path

HASH_SIDE = 16
NEAR_BITS = 8          # of 256: candidates
SAME_Z, NEAR_Z = 0.05, 0.15
IMBALANCE_RATIO = 3.0  # largest / smallest class count above which a warning is due
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def finding(severity: str, kind: str, message: str, items: Sequence = ()) -> dict:
    return {"severity": severity, "kind": kind, "message": message, "items": [show_path(i) if isinstance(i, Path)
                                                                               else i for i in items][:50],
            "count": len(items)}


def image_facts(path: Path) -> dict:
    """`{path, width, height (upright), mode, format, orientation, dhash, sha1}` or `{path, error, reason}`."""
    try:
        w, h = probe_image(path)
        with Image.open(path) as im:
            mode, fmt, orient = im.mode, im.format, int(im.getexif().get(0x0112, 1))
            im.draft("L", (4 * HASH_SIDE, 4 * HASH_SIDE))
            thumb = np.asarray(im.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.BILINEAR),
                               dtype=np.int16)
            small = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
        dhash = np.packbits(thumb[:, 1:] > thumb[:, :-1]).view(np.uint64).tolist()   # 4 words of 64 bits
        small = (small - small.mean()) / (small.std() + 1e-6)
        sha1 = hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except (BadImage, FileNotFoundError, OSError) as e:
        return {"path": path, "error": str(e), "reason": getattr(e, "reason", "missing")}
    return {"path": path, "width": w, "height": h, "mode": mode, "format": fmt, "orientation": orient,
            "dhash": dhash, "sha1": sha1, "thumb": small}


def odd_images(facts: list[dict]) -> list[dict]:
    """Modes other than RGB, EXIF rotation, sizes far from the median (x4 or /4, or under 16 px)."""
    ok = [f for f in facts if "error" not in f]
    out = []
    by_mode: dict[str, list] = {}
    for f in ok:
        if f["mode"] != "RGB":
            by_mode.setdefault(f["mode"], []).append(f["path"])
    for mode, paths in sorted(by_mode.items()):
        out.append(finding("warning", "mode", f"{len(paths)} image(s) in mode {mode} (converted to RGB when read)", paths))
    rotated = [f["path"] for f in ok if f["orientation"] != 1]
    if rotated:
        out.append(finding("warning", "exif_rotation", f"{len(rotated)} image(s) carry an EXIF rotation (read upright; "
                           "boxes and masks must be drawn on the upright image)", rotated))
    if ok:
        med = float(np.median([max(f["width"], f["height"]) for f in ok]))
        outliers = [f["path"] for f in ok if min(f["width"], f["height"]) < 16
                    or max(f["width"], f["height"]) > 4 * med or max(f["width"], f["height"]) < med / 4]
        if outliers:
            out.append(finding("warning", "size_outlier", f"{len(outliers)} image(s) far from the median size "
                               f"({med:.0f} px) or under 16 px", outliers))
    return out


def unreadable(facts: list[dict], skipped: list[dict]) -> list[dict]:
    """What training skips: the files `image_facts` could not decode and those the readers skipped."""
    reasons: dict[str, set] = {}
    for f in facts:
        if "error" in f:
            reasons.setdefault(f["reason"], set()).add(show_path(f["path"]))
    for s in skipped:
        reasons.setdefault(s["reason"], set()).add(s["path"])
    return [finding("error", f"skipped_{r}", f"{len(p)} file(s) training will skip: {r}", sorted(p))
            for r, p in sorted(reasons.items())]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances `(len(a), len(b))` of hashes `(N, W)` uint64, in row blocks (memory)."""
    out = np.empty((len(a), len(b)), np.int32)
    for i in range(0, len(a), 256):
        x = (a[i:i + 256, None, :] ^ b[None, :, :]).view(np.uint8)
        out[i:i + 256] = _POPCOUNT[x].sum(-1, dtype=np.int32)
    return out


def _zdiff(a: dict, b: dict) -> float:
    return float(np.abs(a["thumb"] - b["thumb"]).mean())


def _hashes(fs: list[dict]) -> np.ndarray:
    return np.array([f["dhash"] for f in fs], dtype=np.uint64).reshape(len(fs), -1)


def duplicates(split_facts: dict[str, list[dict]]) -> list[dict]:
    """Exact and near duplicates inside each split, and train/val leakage (the same picture on both sides)."""
    out = []
    hashed = {s: [f for f in fs if "error" not in f] for s, fs in split_facts.items()}
    for split, fs in hashed.items():
        if len(fs) < 2:
            continue
        h = _hashes(fs)
        d = hamming(h, h)
        i, j = np.nonzero(np.triu(d <= NEAR_BITS, k=1))
        keep = [_zdiff(fs[a], fs[b]) <= NEAR_Z for a, b in zip(i, j)]
        i, j = i[keep], j[keep]
        exact = [(fs[a]["path"], fs[b]["path"]) for a, b in zip(i, j) if fs[a]["sha1"] == fs[b]["sha1"]]
        near = [(fs[a]["path"], fs[b]["path"]) for a, b in zip(i, j) if fs[a]["sha1"] != fs[b]["sha1"]]
        if exact:
            out.append(finding("warning", "duplicate", f"{len(exact)} pair(s) of identical files in {split}",
                               [f"{show_path(a)} == {show_path(b)}" for a, b in exact]))
        if near:
            out.append(finding("warning", "near_duplicate", f"{len(near)} near-duplicate pair(s) in {split} "
                               "(same picture re-encoded, resized or re-exposed)", [f"{show_path(a)} ~ {show_path(b)}" for a, b in near]))
    tr, va = hashed.get("train", []), hashed.get("val", [])
    if tr and va:
        d = hamming(_hashes(tr), _hashes(va))
        i, j = np.nonzero(d <= NEAR_BITS)
        keep = [_zdiff(tr[a], va[b]) <= SAME_Z for a, b in zip(i, j)]
        i, j = i[keep], j[keep]
        pairs = [f"{show_path(tr[a]['path'])} ~ {show_path(va[b]['path'])}" for a, b in zip(i, j)]
        if pairs:
            out.append(finding("error", "leakage", f"{len(set(j.tolist()))} val image(s) also in train (same or "
                               "near-same picture): validation numbers will flatter the model", pairs))
    return out


def balance(counts: dict[str, int], what: str) -> tuple[list[dict], dict[str, float]]:
    """An imbalance warning and the suggested class weights `N / (K * n_c)` (mean 1 over samples)."""
    present = {c: n for c, n in counts.items() if n > 0}
    weights = {c: round(sum(present.values()) / (len(present) * n), 3) for c, n in present.items()}
    out = []
    missing = [c for c, n in counts.items() if n == 0]
    if missing:
        out.append(finding("error", "empty_class", f"class(es) without any {what} in train: {', '.join(missing)}", missing))
    if len(present) > 1 and max(present.values()) / min(present.values()) > IMBALANCE_RATIO:
        out.append(finding("warning", "imbalance", f"classes are imbalanced ({what}: {max(present.values())} vs "
                           f"{min(present.values())}); consider train.class_weights="
                           f"[{', '.join(f'{weights.get(c, 0):g}' for c in counts)}]", []))
    return out, weights


def class_counts(labels: Sequence[int], classes: Sequence[str]) -> dict[str, int]:
    c = Counter(int(x) for x in labels)
    return {name: c.get(i, 0) for i, name in enumerate(classes)}


def file_names(paths: Sequence[os.PathLike]) -> list[str]:
    return [show_path(p) for p in paths]

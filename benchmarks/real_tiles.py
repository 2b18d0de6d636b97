"""Small real detection set: 128-px tiles of scikit-image's offline sample photographs, COCO on disk.

No real detection data ships in the repository or in a package we may depend on, so this cuts
tiles out of two real images that scikit-image carries offline and derives their boxes with a
classical pipeline. THE BOXES ARE PSEUDO-LABELS from that pipeline, not human annotations: they
are what the pipeline below finds, misses and merges included. The images are real (stain
texture, noise, blur, touching and faint objects), which is what the generated scenes lack.

- `nucleus`: `skimage.data.immunohistochemistry()` (512 x 512 RGB, IHC-stained colon tissue).
  Haematoxylin channel by colour deconvolution (`rgb2hed`), Gaussian sigma 1, Otsu threshold,
  holes filled, regions under 30 px dropped, touching nuclei split by a watershed on the
  distance transform (markers: `peak_local_max`, min_distance 5).
- `galaxy`: `skimage.data.hubble_deep_field()` (872 x 1000 RGB), its top-left 512 x 512.
  Grey level, Otsu threshold, connected components, regions under 12 px dropped.

Each 512 x 512 image is labelled whole, then cut into a 4 x 4 grid of 128-px tiles; a tile's
boxes are the bounding boxes of the label regions' parts inside it (at least `MIN_AREA` px of
the region inside the tile). Rows 0-2 of each grid are train (12 + 12 tiles), row 3 is val
(4 + 4): train and val never share pixels.

    python benchmarks/real_tiles.py --out /tmp/real-tiles [--preview tiles.png]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TILE = 128
GRID = 4
VAL_ROWS = (3,)
CLASSES = ("nucleus", "galaxy")
MIN_AREA = {"nucleus": 30, "galaxy": 12}


def nuclei_labels() -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, label image) of the IHC sample: one label per nucleus."""
    from scipy import ndimage as ndi
    from skimage import color, data, feature, filters, measure, segmentation

    rgb = data.immunohistochemistry()
    h = filters.gaussian(color.rgb2hed(rgb)[..., 0], sigma=1.0)
    mask = ndi.binary_fill_holes(h > filters.threshold_otsu(h))
    mask = _drop_small(mask, MIN_AREA["nucleus"])
    dist = ndi.distance_transform_edt(mask)
    peaks = feature.peak_local_max(dist, min_distance=5, labels=measure.label(mask))
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return rgb, segmentation.watershed(-dist, markers, mask=mask)


def galaxy_labels() -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, label image) of the top-left 512 x 512 of the Hubble deep field."""
    from skimage import color, data, filters, measure

    rgb = data.hubble_deep_field()[:GRID * TILE, :GRID * TILE]
    grey = color.rgb2gray(rgb)
    mask = _drop_small(grey > filters.threshold_otsu(grey), MIN_AREA["galaxy"])
    return rgb, measure.label(mask)


def _drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    from skimage import measure

    lab = measure.label(mask)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[lab]


def tile_boxes(labels: np.ndarray, min_area: int) -> list[list[float]]:
    """xyxy pixel boxes (exclusive right/bottom edge) of the regions of one label tile."""
    from skimage import measure

    return [[float(c0), float(r0), float(c1), float(r1)]
            for p in measure.regionprops(labels) if p.area >= min_area
            for r0, c0, r1, c1 in [p.bbox]]


def write_real_tiles(root: str | Path) -> dict[str, dict[str, str]]:
    """Writes `root/{train,val}/images/*.png` and `root/{train,val}/coco.json`; returns
    `{"train": {"images", "annotations"}, "val": {...}}` as the detection data config wants."""
    root = Path(root)
    splits: dict[str, dict] = {s: {"images": [], "annotations": []} for s in ("train", "val")}
    for cat, (rgb, labels) in enumerate((nuclei_labels(), galaxy_labels())):
        name = CLASSES[cat]
        for r in range(GRID):
            for c in range(GRID):
                split = "val" if r in VAL_ROWS else "train"
                folder = root / split / "images"
                folder.mkdir(parents=True, exist_ok=True)
                sl = np.s_[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
                file = f"{name}_r{r}c{c}.png"
                Image.fromarray(np.ascontiguousarray(rgb[sl])).save(folder / file)
                s = splits[split]
                image_id = len(s["images"]) + 1
                s["images"].append({"id": image_id, "file_name": file, "width": TILE, "height": TILE})
                for x1, y1, x2, y2 in tile_boxes(labels[sl], MIN_AREA[name]):
                    s["annotations"].append({"id": len(s["annotations"]) + 1, "image_id": image_id,
                                             "category_id": cat + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    out = {}
    for split, s in splits.items():
        s["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
        path = root / split / "coco.json"
        path.write_text(json.dumps(s))
        out[split] = {"images": str(root / split / "images"), "annotations": str(path)}
    return out


def preview(paths: dict, out: str | Path, *, per_split: int = 8, scale: int = 2) -> None:
    """A PNG grid of tiles with their pseudo-label boxes drawn (train first, then val)."""
    cells = []
    for split in ("train", "val"):
        coco = json.loads(Path(paths[split]["annotations"]).read_text())
        ims = coco["images"]
        step = max(1, len(ims) // per_split)
        for im in ims[::step][:per_split]:
            tile = Image.open(Path(paths[split]["images"]) / im["file_name"]).convert("RGB")
            tile = tile.resize((TILE * scale, TILE * scale), Image.NEAREST)
            draw = ImageDraw.Draw(tile)
            for a in coco["annotations"]:
                if a["image_id"] == im["id"]:
                    x, y, w, h = (v * scale for v in a["bbox"])
                    colour = (0, 255, 0) if split == "train" else (255, 200, 0)
                    draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour)
            cells.append(tile)
    cols = per_split
    rows = (len(cells) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * TILE * scale, rows * TILE * scale))
    for i, tile in enumerate(cells):
        sheet.paste(tile, ((i % cols) * TILE * scale, (i // cols) * TILE * scale))
    sheet.save(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/real-tiles")
    ap.add_argument("--preview", default=None, help="also write a PNG of tiles with their boxes")
    args = ap.parse_args()
    paths = write_real_tiles(args.out)
    for split, p in paths.items():
        coco = json.loads(Path(p["annotations"]).read_text())
        per_class = {n: sum(a["category_id"] == i + 1 for a in coco["annotations"]) for i, n in enumerate(CLASSES)}
        print(split, len(coco["images"]), "tiles", per_class)
    if args.preview:
        preview(paths, args.preview)


if __name__ == "__main__":
    main()

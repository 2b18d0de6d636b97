"""Domain adaptation on a digits pair built like MNIST -> MNIST-M (digits_m.py): labelled grey
scikit-learn digits train, unlabelled colour-blended digits (other images) are the target, held-out
blended digits score. The loop, the budget and the numbers are adaptation_compare.py's.

    nice -n 10 python benchmarks/domain_adaptation_digits.py --out /tmp/da-digits --methods none adabn dann

Prints and writes `OUT/results.json` + `OUT/results.md` (target accuracy mean +- std over seeds,
source-val accuracy, proxy A-distance, and how source-val and SND selection track target accuracy).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from adaptation_compare import add_arguments, compare
from digits_m import write_pair

# digits have an "up" (no vertical flips or turns; the classification pipeline's horizontal flip
# stays on for every arm); crops keep most of the digit; colour jitter off (the shift under study)
AUGMENT = {"data.crop_scale": 0.7, "data.color_jitter": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vt-da-digits")
    ap.add_argument("--px", type=int, default=32, help="pixel size the pair is written at")
    add_arguments(ap, epochs=10, batch=32, size=32, per_class=None, diag=300)
    args = ap.parse_args()
    out = Path(args.out)
    compare(write_pair(out / f"pair{args.px}", px=args.px), ["digits:digits_m"], args, out=out, augment=AUGMENT)


if __name__ == "__main__":
    main()

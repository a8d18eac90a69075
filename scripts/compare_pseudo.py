"""Agreement of two pseudo-label files of the same weak labels, mask by mask (e.g. bf16 vs
fp32 runs): mean IoU of twin masks and the share at IoU >= 0.9. Exits 1 when the share is
below ``--min-share`` or the mean below ``--min-iou``.

    python scripts/compare_pseudo.py runs/a/pseudo/box+class.json runs/b/pseudo/box+class.json
"""

from __future__ import annotations

import argparse
import json
import sys

from pseudolabel.data.coco import load_coco
from pseudolabel.evaluation.pseudo import twin_agreement


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--min-share", type=float, default=0.95)
    ap.add_argument("--min-iou", type=float, default=0.0)
    args = ap.parse_args()
    got = twin_agreement(load_coco(args.a), load_coco(args.b))
    print(json.dumps(got))
    ok = got["share_iou_0.9"] >= args.min_share and got["mean_iou"] >= args.min_iou
    if not ok:
        print(f"disagreement: share at IoU >= 0.9 {got['share_iou_0.9']:.3f} (need "
              f"{args.min_share}), mean IoU {got['mean_iou']:.3f} (need {args.min_iou})",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

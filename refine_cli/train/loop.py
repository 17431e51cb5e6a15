"""Training: optimiser, schedule, logging, validation with the project's evaluator, checkpoints, resume."""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..coco_io import Predictions
from ..engine import refine_predictions
from ..evaluate import evaluate
from ..model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..model.config import RefineMaskConfig
from ..model.refinemask import RefineMask, refinemask_loss
from ..refiner import Refiner, uses_bf16
from .data import RefineDataset, collate, load_sets
from .provenance import environment
from .simulate import simulate_dataset

VAL_MODES = ("resolution", "realistic")
VAL_SEED = 1234


@dataclass
class TrainOptions:
    data: list[str]  # set folders, each optionally DIR*K (see data.load_sets)
    val: Path | None
    out: Path
    config: dict = field(default_factory=dict)  # RefineMaskConfig overrides: of the defaults, or of --init's
    epochs: int = 4
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    max_steps: int | None = None  # stop early (smoke tests, time-boxed runs)
    val_every: int = 0  # steps between validations; 0 = once per epoch
    device: str = "cpu"
    precision: str = "auto"  # bfloat16 autocast for forward and loss, as refiner.uses_bf16 reads it
    workers: int = 1
    seed: int = 0
    train_backbone_from: int | None = None  # output stride from which backbone layers train; None: frozen
    backbone_lr: float = 1.0  # the trained backbone layers' rate, as a multiple of lr
    pretrained: bool = True
    resume: Path | None = None
    init: Path | None = None  # start from this checkpoint's weights and config (fresh optimiser)
    max_instances: int = 12
    mode_probs: dict[str, float] | None = None  # simulation mix; None = data.DEFAULT_MODE_PROBS
    ema: float | None = None  # decay of an exponential moving average of the weights; validated and saved
    # "best": the checkpoint val_rank ranks first; "last": the last step's (validated all the same). A
    # cascade meant to run under a quality gate needs no clean-mask rule: the gate keeps clean masks.
    keep: str = "best"


def val_sets(val_root: Path) -> tuple[dict, dict[str, list[dict]]]:
    """GT of the validation set and its fixed-seed coarse sets, one per mode in VAL_MODES."""
    gt = json.loads((val_root / "instances.json").read_text())
    return gt, {m: simulate_dataset(gt, m, VAL_SEED) for m in VAL_MODES}


def validate(model: RefineMask, gt: dict, coarse_sets: dict[str, list[dict]], images_dir: Path,
             device: str) -> dict[str, dict]:
    """Refine each coarse set and score coarse vs refined: {mode: {"coarse": m, "refined": m}}."""
    refiner = Refiner(model, device)
    images = {im["id"]: im for im in gt["images"]}
    out = {}
    for mode, records in coarse_sets.items():
        refined = copy.deepcopy(records)
        preds = Predictions(Path(f"val-{mode}"), refined, refined, images)
        refine_predictions(preds, images_dir, refiner)
        res = evaluate(gt, [records, refined], names=["coarse", "refined"])
        out[mode] = {f["name"]: {"AP": f["segm"]["AP"], "BAP": f["boundary"]["AP"]} for f in res["files"]}
    # The refiner switched the model to eval mode and channels-last in place; training runs NCHW.
    model.to(memory_format=torch.contiguous_format).train()
    return out


def val_score(metrics: dict[str, dict]) -> float:
    """One number to pick the best checkpoint: mean refined (mask AP + Boundary AP) over the modes."""
    return float(np.mean([m["refined"]["AP"] + m["refined"]["BAP"] for m in metrics.values()]))


def keeps_good_masks(metrics: dict[str, dict]) -> bool:
    """Whether refining the resolution-only set loses neither mask AP nor Boundary AP against it."""
    res = metrics.get("resolution")
    return res is not None and all(res["refined"][k] >= res["coarse"][k] for k in ("AP", "BAP"))


def val_rank(metrics: dict[str, dict]) -> tuple[bool, float]:
    """Checkpoint order: those that keep good masks good first, then by ``val_score``."""
    return keeps_good_masks(metrics), val_score(metrics)


def _param_groups(model: RefineMask, train_backbone_from: int | None, lr: float, backbone_lr: float) -> list[dict]:
    """Freeze the backbone except its layers at output stride >= ``train_backbone_from``.

    Those train at ``lr * backbone_lr``, in a group of their own when the factor is not 1.
    """
    body = model.backbone.body
    body.requires_grad_(False)
    if train_backbone_from is not None:
        for module in body.modules_from(train_backbone_from):
            module.requires_grad_(True)
    in_body = {id(p) for p in body.parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    body_params = [p for p in trained if id(p) in in_body]
    if backbone_lr == 1.0 or not body_params:
        return [{"params": trained, "lr": lr}]
    return [{"params": [p for p in trained if id(p) not in in_body], "lr": lr},
            {"params": body_params, "lr": lr * backbone_lr}]


def _train_mode(model: RefineMask) -> None:
    model.train()
    # Batch statistics of 2-image batches are noise: the backbone's BN stays at its ImageNet
    # values, also in the layers that train.
    for m in model.backbone.body.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def train(opts: TrainOptions, progress=None, log=print) -> dict:
    """Train and write ``opts.out`` (best by validation) and ``<out>.last.pt`` (for --resume).

    ``progress(step, total, losses)`` is called after each step. Returns the best metrics.
    """
    torch.manual_seed(opts.seed)
    entries = load_sets(opts.data)
    ckpt = None
    if opts.resume:
        model, ckpt = load_checkpoint(opts.resume)
        given = RefineMaskConfig.from_dict(opts.config)  # normalised like the checkpoint's (tuples)
        changed = sorted(k for k in opts.config if getattr(given, k) != getattr(model.cfg, k))
        if changed:  # its weights and optimiser state belong to the config it was started with
            raise CheckpointError(f"{opts.resume}: --config changes {', '.join(changed)} of the run being "
                                  "resumed; a resumed run keeps its config (--init starts a new run from it)")
    elif opts.init:
        model, _ = load_checkpoint(opts.init, overrides=opts.config)
    else:
        model = RefineMask(RefineMaskConfig.from_dict(opts.config))  # fields not given keep their defaults
        if opts.pretrained:
            model.backbone.load_pretrained()
    cfg = model.cfg
    # A resumed run trains the parameters, in the groups, its optimiser state was saved for.
    train_backbone_from = ckpt.get("train_backbone_from") if ckpt else opts.train_backbone_from
    backbone_lr = ckpt.get("backbone_lr", 1.0) if ckpt else opts.backbone_lr
    groups = _param_groups(model, train_backbone_from, opts.lr, backbone_lr)
    params = [p for g in groups for p in g["params"]]
    device = torch.device(opts.device)
    bf16 = uses_bf16(opts.precision, device)
    model.to(opts.device)
    dataset = RefineDataset(entries, cfg, seed=opts.seed, max_instances=opts.max_instances,
                            mode_probs=opts.mode_probs)
    steps_per_epoch = math.ceil(len(dataset) / opts.batch_size)
    total = steps_per_epoch * opts.epochs
    if opts.max_steps:
        total = min(total, opts.max_steps)
    warmup = min(opts.warmup_steps, max(total // 5, 1))  # short (smoke) runs still reach the base rate
    optim = torch.optim.AdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, total, warmup))
    # 2-image steps are noisy; an average of recent weights is what gets validated and saved.
    # Buffers are not averaged: the only ones, the backbone's BN statistics, never change in training.
    # A resumed run keeps the decay it was started with, like the trainable set above.
    ema_decay = ckpt.get("ema_decay") if ckpt else opts.ema
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None
    scored = ema.module if ema is not None else model  # the weights validated and saved
    step, epoch0, best = 0, 0, {}
    last_path = opts.out.with_suffix(".last.pt")
    if ckpt is not None:
        optim.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, epoch0, best = ckpt["step"], ckpt["epoch"] + 1, ckpt["best"]
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        log(f"resumed from {opts.resume} at epoch {epoch0}, step {step}")
    gt, coarse_sets = val_sets(opts.val) if opts.val else (None, {})
    log_path = opts.out.with_suffix(".csv")
    new_log = not (opts.resume and log_path.exists())
    with open(log_path, "w" if new_log else "a", newline="") as f:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["epoch", "step", "lr", "loss", "stage0", "stage1", "stage2", "stage3", "semantic",
                             "seconds", "val"])
        t0 = time.perf_counter()
        for epoch in range(epoch0, opts.epochs):
            if step >= total:
                break
            dataset.epoch = epoch
            gen = torch.Generator().manual_seed(opts.seed * 1000 + epoch)
            loader = DataLoader(dataset, opts.batch_size, shuffle=True, generator=gen, collate_fn=collate,
                                num_workers=opts.workers, persistent_workers=False, pin_memory=device.type == "cuda")
            _train_mode(model)
            for batch in loader:
                if step >= total:
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = model(batch["images"], batch["rois"], batch["coarse"])
                    losses = refinemask_loss(cfg, out, batch["gt"], batch["sem_target"], batch["sem_weight"])
                loss = sum(losses.values())
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                optim.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                vals = {k: v.item() for k, v in losses.items()}
                if progress:
                    progress(step, total, vals)
                val = ""
                every = opts.val_every or steps_per_epoch
                if gt is not None and (step % every == 0 or step >= total):
                    metrics = validate(scored, gt, coarse_sets, opts.val / "images", opts.device)
                    _train_mode(model)
                    val = json.dumps(metrics)
                    log(f"step {step}: " + "; ".join(
                        f"{m}: AP {v['coarse']['AP']:.1f}->{v['refined']['AP']:.1f}, "
                        f"BAP {v['coarse']['BAP']:.1f}->{v['refined']['BAP']:.1f}" for m, v in metrics.items()))
                    keeps, score = val_rank(metrics)
                    if "metrics" not in best or opts.keep == "last" or (keeps, score) > val_rank(best["metrics"]):
                        best = {"score": score, "keeps_good_masks": keeps, "step": step, "epoch": epoch,
                                "metrics": metrics}
                        save_checkpoint(opts.out, scored, meta={"best": best, "data": [str(d) for d in opts.data],
                                                              "train_backbone_from": train_backbone_from,
                                                              "environment": environment()})
                writer.writerow([epoch, step, f"{sched.get_last_lr()[0]:.2e}", f"{loss.item():.4f}",
                                 *(f"{vals[k]:.4f}" for k in ("stage0", "stage1", "stage2", "stage3", "semantic")),
                                 f"{time.perf_counter() - t0:.1f}", val])
                f.flush()
            save_checkpoint(last_path, model, meta={"best": best}, extra={
                "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "step": step,
                "epoch": epoch, "best": best, "train_backbone_from": train_backbone_from, "backbone_lr": backbone_lr,
                "ema_decay": ema_decay, **({"ema": ema.state_dict()} if ema is not None else {})})
    if gt is None:  # no validation: the last weights are the result
        save_checkpoint(opts.out, scored, meta={"data": [str(d) for d in opts.data], "environment": environment()})
    return best

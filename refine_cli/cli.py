"""Command line: thin click wrappers that parse options, call the modules and report.

Only click and the standard library are imported here: torch, numpy, OpenCV and rich cost seconds, so
each command body imports what it uses, and `--help`, `--version` and input errors come back at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .evaluate.command import eval_command
from .model.config import DEFAULT_WEIGHTS, PRECISIONS
from .options import FiniteFloat
from .visualize.command import visualize_command


def _device(name: str) -> str:
    from .refiner import resolve_device

    try:
        return resolve_device(name)
    except ValueError as e:
        raise click.UsageError(f"--device {name}: {e}") from None


def _run_device(name: str, engine: str) -> str:
    """--device for where the network runs: with --engine ray, "cuda" asks the workers for GPUs (this
    process needs none)."""
    return "cuda" if engine == "ray" and name == "cuda" else _device(name)


def _shard_option(ctx, param, value: str | None) -> tuple[int, int] | None:
    try:
        from .shard import parse_shard

        return parse_shard(value) if value else None
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="refine-masks")
def main() -> None:
    """Sharpen an instance-segmentation detector's masks with a RefineMask head."""


@main.command()
@click.argument("predictions", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON [default: <predictions>.refined.json].")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_WEIGHTS,
              show_default="weights/refinemask_effl0.pt",
              help="Checkpoint to load; a .onnx file (from `export`) runs in onnxruntime.")
@click.option("--images-json", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO JSON whose 'images' map image ids to file names.")
@click.option("--score-thr", type=FiniteFloat(), default=0.0, show_default=True,
              help="Records scoring below this are written back unchanged.")
@click.option("--box-expand", type=FiniteFloat(min=1.0), default=None,
              help="Scale boxes about their centre before crop and paste [default: the checkpoint's].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="RoIs per forward.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="bf16 autocast for the network; auto = bf16 on CUDA, fp32 on CPU.")
@click.option("--update-bbox", is_flag=True, help="Also replace 'bbox' by the refined mask's tight box.")
@click.option("--write-quality", is_flag=True,
              help="Add 'refine_quality' to every refined record: the model's estimate of the input mask's "
                   "IoU with the truth (needs a checkpoint with a quality gate, as the shipped one has).")
@click.option("--keep-above", type=click.FloatRange(0.0, 1.0), default=None, metavar="Q",
              help="Keep a mask unchanged where the quality gate estimates its IoU with the truth above Q; "
                   "1 refines every mask [default: the checkpoint's, set by train-gate].")
@click.option("--skip-missing", is_flag=True, help="Keep records of missing/unreadable images unchanged.")
@click.option("--overwrite", is_flag=True, help="Allow the output to replace the input file.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from the journal beside the output (<output>.journal).")
@click.option("--shard", callback=_shard_option, metavar="K/N",
              help="Refine only the K-th of N disjoint sets of images (1 <= K <= N); `merge` joins the parts.")
@click.option("--engine", type=click.Choice(["single", "ray"]), default="single", show_default=True,
              help="Refine the images in this process, or in a pool of Ray actors with one model each "
                   "(pip install 'refine-masks[ray]'); the output is the same bytes.")
@click.option("--ray-address", metavar="ADDR",
              help="With --engine ray: the Ray cluster to run on (e.g. 'auto', 'ray://head:10001') "
                   "[default: a local instance started for the run].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --engine ray: actors, each with --threads CPU threads (default 1) or one GPU "
                   "with --device cuda [default: as many as the CPUs or GPUs allow].")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def run(predictions, images, output, weights, images_json, score_thr, box_expand, batch_size, device, threads,
        precision, update_bbox, write_quality, keep_above, skip_missing, overwrite, resume, shard, engine,
        ray_address, workers, debug):
    """Refine every mask of PREDICTIONS (COCO results JSON) using the images in IMAGES."""
    from .coco_io import InputError
    from .console import err_console, fail, progress_bar
    from .engine import journal_path, open_input
    from .shard import sharded_output_name
    from .validate import check_inputs, check_output

    if engine != "ray":
        for flag, given in (("--ray-address", ray_address), ("--workers", workers)):
            if given is not None:
                raise click.UsageError(f"{flag} needs --engine ray")
    else:
        from .ray_engine import missing_ray

        if problem := missing_ray():
            raise click.UsageError(problem)
    if output is None:
        output = predictions.with_name(predictions.stem + ".refined.json")
        output = sharded_output_name(output, *shard) if shard else output
    if output.resolve() == predictions.resolve() and not overwrite:
        raise click.UsageError(f"{output} is the input file; pass --overwrite to replace it")
    if not images.is_dir():
        fail(f"{images}: not a directory of images", False)
    try:
        check_output(output)
        index, image_table = open_input(predictions, images_json)
        check_inputs(index, image_table, images, skip_missing)
    except InputError as e:
        fail(str(e), debug)
    # Everything that can be checked without the network has passed: only now pay for torch (_device
    # and the refiner import it).
    from contextlib import nullcontext
    from dataclasses import replace

    from .engine import RefinerSpec, refine_to_file
    from .interrupt import exit_status, sigterm_as_interrupt
    from .journal import file_sha256
    from .model.checkpoint import CheckpointError

    try:
        net_device = _run_device(device, engine)
        spec = RefinerSpec(str(weights), device if weights.suffix == ".onnx" else net_device, batch_size, precision,
                           threads, box_expand, keep_above)
        # With Ray the workers run the network; this process loads it on the CPU only for its checks.
        refiner = replace(spec, device="cpu").load() if engine == "ray" else spec.load()
        for flag, given in (("--write-quality", write_quality), ("--keep-above", keep_above is not None)):
            if given and not refiner.has_quality:
                raise click.UsageError(f"{flag}: {weights} has no quality gate (see `refine-masks train-gate`)")
        # Everything else that changes the output bytes: a journal is resumed only by the same settings.
        settings = {"weights_sha256": file_sha256(weights), "box_expand": refiner.cfg.box_expand,
                    "batch_size": batch_size, "device": net_device, "precision": precision,
                    "keep_above": refiner.cfg.gate_keep_above}
        run_engine, session = None, nullcontext()
        if engine == "ray":
            from .ray_engine import RayOptions, ray_engine, ray_session

            ray_options = RayOptions(address=ray_address, workers=workers, cpus=threads or 1,
                                     gpu=net_device == "cuda")
            # Started before the journal is opened: a cluster that does not answer leaves nothing to resume.
            run_engine, session = ray_engine(spec, ray_options), ray_session(ray_options)
        with session, progress_bar() as bar, sigterm_as_interrupt():
            task = bar.add_task("refining images", total=None, rate="")
            done = [0]

            def on_image(n: int) -> None:
                done[0] += n
                rate = done[0] / max(bar.tasks[task].elapsed or 1e-9, 1e-9)
                bar.update(task, advance=1, rate=f"{done[0]} rec, {rate:.1f} rec/s")

            summary, n_records = refine_to_file(
                index, image_table, images, output, refiner, settings, score_thr=score_thr,
                update_bbox=update_bbox, skip_missing=skip_missing, write_quality=write_quality, resume=resume,
                shard=shard, on_start=lambda n: bar.update(task, total=n), on_image=on_image, engine=run_engine)
    except KeyboardInterrupt as e:
        kept = (f"the images done so far are in {journal_path(output)}; the same command with --resume continues"
                if journal_path(output).exists() else "nothing was done yet")
        err_console.print(f"interrupted: {kept}", highlight=False, soft_wrap=True)
        sys.exit(exit_status(e))
    except CheckpointError as e:
        fail(f"{e} (train one with `refine-masks train` or pass --weights)", debug)
    except InputError as e:
        fail(str(e), debug)
    except OSError as e:
        # Named after the output, not the atomic write's temp file, which the user never asked for.
        fail(f"{output}: cannot write ({e.strerror or e})" if e.filename and ".tmp" in str(e.filename)
             else str(e), debug)
    from rich.table import Table

    table = Table(title="refine-masks run", show_header=False)
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")
    table.add_row("images", str(summary.images))
    table.add_row("records", str(n_records))
    table.add_row("instances refined", str(summary.refined))
    for reason, n in sorted(summary.skipped.items()):
        table.add_row(f"kept unchanged: {reason}", str(n))
    table.add_row("mean changed pixels / instance", f"{summary.mean_changed_pixels:.1f}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    table.add_row("output", str(output))
    err_console.print(table)


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_WEIGHTS,
              show_default="weights/refinemask_effl0.pt", help="Checkpoint to export.")
@click.option("--opset", type=click.IntRange(min=16), default=17, show_default=True,
              help="ONNX opset (>= 16: RoiAlign with half_pixel, torchvision's aligned=True).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def export(out, weights, opset, debug):
    """Write the whole network as OUT.onnx (dynamic image size and instance count) for `run --weights OUT.onnx`."""
    from .console import err_console, fail
    from .model.checkpoint import CheckpointError
    from .onnx_export import ExportError, export_checkpoint

    if out.suffix != ".onnx":
        raise click.UsageError(f"{out}: the output name must end in .onnx (that is how `run` tells it apart)")
    try:
        diff = export_checkpoint(weights, out, opset)
    except (CheckpointError, ExportError, OSError) as e:
        fail(str(e), debug)
    err_console.print(f"wrote {out} (opset {opset}); onnxruntime matches torch to {diff:.1e} in probability")


@main.command()
@click.argument("predictions", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Merged output JSON (what `run` without --shard writes).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def merge(predictions, parts, output, debug):
    """Join the outputs of `run --shard K/N` (every K of 1..N) of PREDICTIONS into one."""
    from .coco_io import InputError
    from .console import err_console, fail
    from .merge import merge_parts

    if output.resolve() in {p.resolve() for p in (predictions, *parts)}:
        raise click.UsageError(f"{output} is one of the inputs")
    try:
        n_records = merge_parts(predictions, list(parts), output)
    except (InputError, OSError) as e:
        fail(str(e), debug)
    err_console.print(f"{n_records} records from {len(parts)} parts -> {output}", highlight=False)


@main.command()
@click.option("--data", required=True,
              help="Comma-separated COCO-format set folders (instances.json + images/); DIR*K lists a set K times.")
@click.option("--val", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Validation set folder (never trained on).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Best checkpoint path.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True, help="Images per step.")
@click.option("--lr", type=FiniteFloat(), default=1e-3, show_default=True)
@click.option("--val-every", type=click.IntRange(min=0), default=0, help="Validate every N steps [default: per epoch].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True, help="Data-loading processes.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="bf16 autocast for forward and loss; auto = bf16 on CUDA, fp32 on CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Continue from a <out>.last.pt checkpoint.")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this checkpoint's weights and config, with a fresh optimiser and schedule.")
@click.option("--config", "config_json", default=None,
              help="JSON object of RefineMaskConfig overrides, e.g. '{\"box_expand\": 1.1}'; with --init, "
                   "of the checkpoint's config.")
@click.option("--modes", default=None,
              help="Coarse-mask simulation mix, e.g. 'resolution=0.6,realistic=0.4' [default: "
                   "resolution 0.4, realistic 0.35, polygon 0.1, box 0.15].")
@click.option("--train-backbone-from", type=click.Choice(["2", "4", "8", "16", "32"]), default=None,
              help="Also train the backbone's layers at this output stride and coarser (2 = all of it); "
                   "frozen by default. Its BatchNorm statistics stay fixed.")
@click.option("--backbone-lr", type=FiniteFloat(0.0, min_open=True), default=1.0, show_default=True,
              help="Rate of the backbone layers --train-backbone-from trains, as a multiple of --lr "
                   "(a resumed run keeps the factor it started with).")
@click.option("--ema", type=FiniteFloat(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Validate and save an exponential moving average of the weights with this decay "
                   "(e.g. 0.999); off by default.")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which validated checkpoint --out gets: the best (first those that keep resolution-only "
                   "masks at least as good as they came, then by mean AP) or the last step's (a cascade "
                   "for train-gate, whose gate keeps good masks).")
@click.option("--no-pretrained", is_flag=True, help="Random backbone init (tests).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def train(data, val, out, epochs, max_steps, batch_size, lr, val_every, device, workers, precision, threads, seed,
          resume, init, config_json, modes, train_backbone_from, backbone_lr, ema, keep, no_pretrained, debug):
    """Train the refiner on simulated coarse masks; keep the best (or the last) validated checkpoint."""
    import torch

    from .coco_io import InputError
    from .console import err_console, fail, progress_bar
    from .model.checkpoint import CheckpointError
    from .model.config import RefineMaskConfig
    from .train.loop import TrainOptions
    from .train.loop import train as run_training

    if threads:
        torch.set_num_threads(threads)
    try:
        overrides = json.loads(config_json) if config_json else {}
        if not isinstance(overrides, dict):
            raise ValueError(f"expected a JSON object of config fields, got {config_json!r}")
        RefineMaskConfig.from_dict(overrides)  # checks names and values; unnamed fields keep their defaults
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--config")
    if resume and init:
        raise click.BadParameter("give --resume or --init, not both", param_hint="--init")
    if backbone_lr != 1.0 and not (train_backbone_from or resume):
        raise click.BadParameter("only the backbone layers --train-backbone-from trains have a rate",
                                 param_hint="--backbone-lr")
    mode_probs = _parse_modes(modes) if modes else None
    opts = TrainOptions(data=data.split(","), val=val, out=out, config=overrides, epochs=epochs,
                        batch_size=batch_size, lr=lr, max_steps=max_steps, val_every=val_every,
                        device=_device(device), workers=workers, seed=seed, resume=resume, init=init,
                        precision=precision, pretrained=not no_pretrained, mode_probs=mode_probs, ema=ema,
                        train_backbone_from=int(train_backbone_from) if train_backbone_from else None,
                        backbone_lr=backbone_lr, keep=keep)
    with progress_bar() as bar:
        task = bar.add_task("training steps", total=None, rate="")

        def progress(step: int, total: int, losses: dict) -> None:
            bar.update(task, completed=step, total=total,
                       rate=" ".join(f"{k} {v:.3f}" for k, v in losses.items()))

        try:
            best = run_training(opts, progress=progress, log=bar.console.print)
        except (FileNotFoundError, CheckpointError, InputError) as e:
            fail(str(e), debug)
    err_console.print(f"best: {json.dumps(best)}")


@main.command("train-gate")
@click.option("--init", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint whose cascade the gate learns to judge (kept frozen).")
@click.option("--data", required=True,
              help="Comma-separated COCO-format set folders (instances.json + images/); DIR*K simulates K times.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write.")
@click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Instances per step.")
@click.option("--lr", type=FiniteFloat(0.0, min_open=True), default=2e-3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep the simulated instances and cascade outputs here: written on the first run, read "
                   "(if made from the same --init, --data and --seed) on later ones.")
@click.option("--calibration-folds", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also keep the threshold below the lowest estimate of any clean training mask by gates "
                   "trained without its image (K more gate trainings, one per fold of the images): more "
                   "conservative; 0: by the gate's estimates of its own training masks only.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def train_gate(init, data, out, steps, batch_size, lr, threads, seed, cache, calibration_folds, debug):
    """Add a quality gate to a trained refiner: it learns, per instance and pixel, when to keep the input mask."""
    import torch

    from .coco_io import InputError
    from .console import err_console, fail, progress_bar
    from .model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from .train.data import load_sets
    from .train.gate import (
        GATE_SIMULATIONS,
        attach_gate,
        build_cache,
        calibrated_keep_threshold,
        load_cache,
        save_cache,
    )
    from .train.gate import train_gate as fit_gate
    from .train.provenance import environment

    if threads:
        torch.set_num_threads(threads)
    try:
        model, ckpt = load_checkpoint(init)
        entries = load_sets(data.split(","))
    except (FileNotFoundError, CheckpointError, InputError) as e:
        fail(str(e), debug)
    key = {"init": str(init), "data": data, "seed": seed, "simulations": GATE_SIMULATIONS}
    with progress_bar() as bar:
        instances = load_cache(cache, key) if cache and cache.exists() else None
        if instances is None:
            task = bar.add_task("simulating + cascade", total=len(entries), rate="")
            instances = build_cache(model, entries, seed, progress=lambda i, n: bar.update(task, completed=i))
            if cache:
                save_cache(cache, instances, key)
        attach_gate(model, seed)
        task = bar.add_task("gate", total=steps, rate="")
        result = fit_gate(model, instances, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                          progress=lambda i, n, losses: bar.update(task, completed=i, rate=" ".join(
                              f"{k} {v:.3f}" for k, v in losses.items())))
        folds = [bar.add_task(f"calibration fold {k + 1}/{calibration_folds}", total=steps, rate="")
                 for k in range(calibration_folds)]
        threshold, fold_lowest = calibrated_keep_threshold(
            model, instances, calibration_folds, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
            progress=lambda k, i, n: bar.update(folds[k], completed=i))
    model.cfg.gate_keep_above = threshold
    meta = {**ckpt.get("meta", {}), "gate": {"init": str(init), "data": data.split(","), "steps": steps,
                                             "batch_size": batch_size, "lr": lr, "seed": seed,
                                             "instances": len(instances), "simulations": GATE_SIMULATIONS,
                                             "final_losses": result, "calibration_folds": calibration_folds,
                                             "fold_lowest_clean_estimate": fold_lowest,
                                             "environment": environment()}}
    save_checkpoint(out, model, meta=meta)
    err_console.print(f"gate: {len(instances)} cached instances, {steps} steps in {result['seconds']:.0f} s, "
                      f"keeps masks estimated above {model.cfg.gate_keep_above} -> {out}")


def _parse_modes(text: str) -> dict[str, float]:
    """'resolution=0.6,realistic=0.4' -> {"resolution": 0.6, "realistic": 0.4} (names checked)."""
    from .train.simulate import MODES

    probs = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            probs[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not NAME=WEIGHT", param_hint="--modes") from None
        if name not in MODES or probs[name] < 0:
            raise click.BadParameter(f"{part!r}: modes are {', '.join(MODES)} with weights >= 0",
                                     param_hint="--modes")
    if sum(probs.values()) <= 0:
        raise click.BadParameter("weights sum to 0", param_hint="--modes")
    return probs


main.add_command(eval_command)
main.add_command(visualize_command)

"""`run --engine ray`: the images refined by a pool of Ray Data actors, each holding one model.

Only the refining moves: this process still indexes the input, keeps the journal (so `--resume`,
`--shard` and progress work as in one process) and writes the output in record order, so the output
is byte for byte the single-process one. Each image goes to the workers as an :class:`ImageTask`
(record byte ranges, image file, images-table entry); a worker reads the records from the
predictions file and the image itself, so the predictions, images and weights must be at the same
paths on every node. Ray is imported only here, and only for `--engine ray`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .coco_io import InputError
from .engine import (
    Engine,
    ImageOptions,
    ImageResults,
    ImageTask,
    RefinerSpec,
    Summary,
    prepare_task,
    refine_prepared,
)

INSTALL = "pip install 'refine-masks[ray]'"


def missing_ray() -> str | None:
    """None when Ray Data can be imported, else a one-line usage error naming the extra to install."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        return f"--engine ray needs Ray Data, which is not installed ({e}): {INSTALL}"
    return None


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` of an existing cluster (None: start a local instance for the run
    and shut it down after); ``workers`` actors (None: as many as the CPUs, or GPUs, allow), each
    reserving ``cpus`` CPUs (its torch threads) and with ``gpu`` one GPU."""

    address: str | None = None
    workers: int | None = None
    cpus: int = 1
    gpu: bool = False


def ray_engine(spec: RefinerSpec, options: RayOptions) -> Engine:
    """An engine for :func:`engine.refine_file`: every task with records to refine goes to a pool of
    ``options.workers`` actors, each loading ``spec``'s refiner once, in the current :func:`ray_session`
    (one is started for the run if none is)."""

    def engine(tasks, source: Path, image_options: ImageOptions) -> ImageResults:
        return _refine_on_ray(tasks, source, image_options, spec, options)

    return engine


class _Worker:
    """One actor of the pool: the refiner loaded once, then one image per call (batch_size=1)."""

    def __init__(self, spec: RefinerSpec, source: str, size: int, image_options: ImageOptions):
        self.source = Path(source)
        self.options = image_options
        self.problem = None
        try:
            here = os.path.getsize(source)
        except OSError as e:
            here = f"unreadable ({e.strerror or e})"
        if here != size:
            # Records are read by byte offset: another copy of the file would be read wrong.
            self.problem = (f"{source}: the predictions file on a Ray worker is not the driver's "
                            f"({here} bytes against {size}); it must be the same file on every node")
            return
        self.file = open(source, "rb")
        self.refiner = spec.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for text in batch["task"]:
            if self.problem:
                results.append(json.dumps({"error": self.problem}))
                continue
            task = ImageTask(**json.loads(text))
            try:
                prepared = prepare_task(task, self.file, self.source, self.options)
                patches, counts = refine_prepared(prepared, self.refiner, self.options)
            except InputError as e:  # bad input is the driver's to report (and it drops the journal)
                results.append(json.dumps({"error": str(e)}))
                continue
            # JSON both ways: the journal writes json.dumps of the patch, which a round trip leaves unchanged.
            results.append(json.dumps({"patches": patches, "counts": counts}))
        return {"position": batch["position"], "result": np.array(results, dtype=object)}


def _refine_on_ray(tasks, source: Path, image_options: ImageOptions, spec: RefinerSpec,
                   options: RayOptions) -> ImageResults:
    import ray
    import ray.data

    work = []
    for task in tasks:
        if task.records:
            work.append({"position": task.position, "task": json.dumps(asdict(task))})
        else:  # nothing to refine: done here, without a worker (as the single process does not decode it)
            yield task.position, [], Summary().counts()
    if not work:
        return
    with ray_session(options):
        workers = min(options.workers or _fitting_workers(ray.cluster_resources(), options), len(work))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results, and so the journal, in task order
        context.enable_progress_bars = False  # `run` has its own
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per dataset started and finished
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        dataset = ray.data.from_items(work).map_batches(
            _Worker, fn_constructor_args=(spec, str(source), os.path.getsize(source), image_options),
            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=options.cpus, num_gpus=1 if options.gpu else 0)
        for row in dataset.iter_rows():
            result = json.loads(row["result"])
            if "error" in result:
                raise InputError(result["error"])
            yield int(row["position"]), [(int(i), patch) for i, patch in result["patches"]], result["counts"]


@contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Ray for one run: connect to ``options.address``, or start a local instance with the CPUs of
    ``options.workers`` actors (default: all of this machine's); shut down (disconnect) at the end.
    Inside a session already started (by `run`, before it opens the journal, or by a caller) this
    does nothing. ConnectionError, naming the address, when no cluster answers there."""
    import ray

    if ray.is_initialized():
        yield
        return
    # ray.init installs its own SIGTERM handler in this process (it would end the run without a word);
    # `run`'s, which ends it as Ctrl-C does (journal kept, "--resume" said), goes back in after it.
    sigterm = signal.getsignal(signal.SIGTERM)
    if options.address:
        _connect(ray, options.address)
    else:
        workers = options.workers or max(1, (os.cpu_count() or 1) // options.cpus)
        ray.init(num_cpus=workers * options.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    if sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        ray.shutdown()


def _connect(ray, address: str) -> None:
    """ray.init on an existing cluster. A host:port is tried first: Ray itself retries an address
    where nothing answers for minutes."""
    host, _, port = address.rpartition(":")
    if "://" not in address and host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise ConnectionError(f"--ray-address {address}: no Ray cluster answers there "
                                  f"({e.strerror or e})") from e
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise ConnectionError(f"--ray-address {address}: {e}") from e


def _fitting_workers(resources: dict[str, float], options: RayOptions) -> int:
    """How many actors the cluster's resources hold: one per GPU with ``gpu``, else CPUs / ``cpus``."""
    if options.gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 0) // options.cpus))

"""Data-parallel training with torch.distributed: process groups, launching, sharded data.

``training.fit(..., world_size=N)`` trains with N processes (DistributedDataParallel: gloo on CPU,
NCCL on CUDA). Three ways in:

* **launched here**: ``world_size > 1`` and no process group yet. The calling process becomes rank
  0 and keeps training its own ``model`` object, so the trained state (same parametrizations, same
  Parameter objects) is in the caller's hands afterwards, logging and tqdm go to the notebook as
  usual, and only rank 0 writes. Ranks 1..N-1 are started with ``torch.multiprocessing`` from a
  forkserver and rebuilt from one payload file written with ``torch.save``; the group is torn
  down at the end.
* **under torchrun** (``RANK``/``WORLD_SIZE`` in the environment, e.g. papermill kernels started by
  ``torchrun -m helpers.run``): the group is joined from the environment (``env://``) and kept.
* **inside an existing group** (the user's own ``init_process_group``): used as it is.

Why a forkserver, measured on this 2-core machine (torch 2.14, GNU OpenMP, load ~10 from other
jobs): a child *forked* from the trained process hangs in its first multi-threaded op (libgomp
keeps the parent's dead thread pool; with one thread per child it works), and CUDA cannot be used
after fork: fork would only serve one core per process and no GPU. *Spawn* works everywhere but
every fit paid a fresh interpreter: 26 s per 1-epoch toy fit, most of it importing torch and,
inside DDP's constructor, torch._dynamo (6 s). The forkserver is a fresh interpreter that has
imported both once (it never runs an op, so its forks are safe for OpenMP and CUDA): the first
fit of a process costs the same ~27 s, each later one 0.9 s (``benchmarks/bench_ddp.py`` measures
both as ``first_fit_s`` and ``next_fit_s``).

Parametrized modules (pruning masks, shared weights) live in classes that
``torch.nn.utils.parametrize`` creates at run time and refuses to pickle; the payload pickler
stores them as (plain class, instance dict) and the loader re-injects the parametrization the
same way ``register_parametrization`` does, without re-running any ``right_inverse``. Datasets
must be picklable (the ``helpers.data`` ones are); a model class must be importable (defined in
a module, not a notebook cell). Otherwise launch with ``torchrun``, where nothing is pickled.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import types
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from . import placement

TIMEOUT = timedelta(minutes=30)  # a rank that stops answering fails the others after this
START_METHOD = "forkserver"


# ----------------------------------------------------------------------------- where we are

def is_running() -> bool:
    """A process group exists in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_running() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_running() else 1


def is_main_process() -> bool:
    """Rank 0 (or no group): the process that writes files and logs."""
    return rank() == 0


def torchrun_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when not launched by it)."""
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        return 1
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend_for(device: torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK under torchrun, else rank modulo the GPUs)."""
    device = torch.device(device)
    if device.type != "cuda" or not is_running():
        return device
    local = int(os.environ.get("LOCAL_RANK", rank() % torch.cuda.device_count()))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def join_torchrun_group(device) -> bool:
    """Under torchrun with no group yet: join it from the environment. True if a group now exists."""
    if not is_running() and torchrun_world_size() > 1:
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend_for(device), init_method="env://", timeout=TIMEOUT)
    return is_running()


# ----------------------------------------------------------------------------- keeping ranks identical

@torch.no_grad()
def broadcast_module(model: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer (masks, codebook indices, BN statistics) from rank ``src``."""
    for tensor in [*model.parameters(), *model.buffers()]:
        broadcast_tensor(tensor, src)


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> None:
    # gloo has no bool broadcast: masks travel as uint8
    if tensor.dtype == torch.bool:
        carrier = tensor.to(torch.uint8)
        torch.distributed.broadcast(carrier, src)
        tensor.copy_(carrier.bool())
    else:
        torch.distributed.broadcast(tensor.data, src)


@torch.no_grad()
def broadcast_float_buffers(model: nn.Module, src: int = 0) -> None:
    """BatchNorm running statistics drift apart per rank (each sees its own batches): take rank 0's."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            torch.distributed.broadcast(buffer, src)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (a checkpoint read by rank 0 only: no shared disk needed)."""
    box = [obj if rank() == src else None]
    torch.distributed.broadcast_object_list(box, src)
    return box[0]


def all_sum(values: list[float], device) -> list[float]:
    """Element-wise sum over ranks, in float64 (counts and loss sums of an epoch)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- sharded data

class Strided(Sampler):
    """Rank ``r`` of ``n`` gets items ``r, r + n, r + 2n, ...``: every item exactly once, no padding.

    For evaluation (DistributedSampler pads the last ranks with repeats, which would count some
    images twice).
    """

    def __init__(self, length: int, rank: int, world: int):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world))

    def __len__(self):
        return len(range(self.rank, self.length, self.world))


def per_rank_batch(batch_size: int, world: int) -> int:
    """The profile's batch size is the global batch: each rank takes its share (rounded up).

    So a profile's learning rate, batch and step count mean the same with any number of processes;
    to use bigger GPUs fully, raise ``batch_size`` (and ``lr``) together.
    """
    return max(1, math.ceil(batch_size / world))


def _loader_like(loader, sampler, batch_size, generator=None) -> DataLoader:
    workers = getattr(loader, "num_workers", 0)
    return DataLoader(loader.dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=loader.collate_fn, pin_memory=getattr(loader, "pin_memory", False),
                      drop_last=getattr(loader, "drop_last", False), generator=generator,
                      persistent_workers=workers > 0)


def shard_train_loader(loader, seed: int) -> DataLoader:
    """This rank's part of a training loader: a DistributedSampler (call ``set_epoch`` every epoch)."""
    from torch.utils.data import DistributedSampler, RandomSampler

    _check_loader(loader)
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    return _loader_like(loader, sampler, per_rank_batch(loader.batch_size, world_size()),
                        torch.Generator().manual_seed(seed))


def shard_eval_loader(loader) -> DataLoader:
    """This rank's part of an evaluation loader: every image evaluated once over all ranks."""
    _check_loader(loader)
    return _loader_like(loader, Strided(len(loader.dataset), rank(), world_size()), loader.batch_size)


def _check_loader(loader):
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(f"Data-parallel training re-shards the loaders, so they must be DataLoaders with a "
                        f"batch_size (got {type(loader).__name__}); build them with helpers.data.loader.")


# ----------------------------------------------------------------------------- launching

def _rebuild_parametrized(plain_class, state):
    from torch.nn.utils import parametrize

    module = plain_class.__new__(plain_class)
    module.__dict__.update(state)
    parametrize._inject_new_class(module)
    for name in module.parametrizations:
        parametrize._inject_property(module, name)
    return module


class _Pickler(pickle.Pickler):
    """Pickles parametrized modules as (plain class, instance dict); see the module docstring."""

    def reducer_override(self, obj):
        from torch.nn.utils import parametrize

        if isinstance(obj, nn.Module) and parametrize.is_parametrized(obj):
            return _rebuild_parametrized, (type(obj).__bases__[0], dict(obj.__dict__))
        return NotImplemented


_PICKLE_MODULE = types.SimpleNamespace(Pickler=_Pickler, __name__="helpers.distributed._pickle")


def save_payload(obj, path) -> None:
    """``torch.save`` that also handles parametrized modules (loaded with ``load_payload``)."""
    torch.save(obj, path, pickle_module=_PICKLE_MODULE)


def load_payload(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def loader_parts(loader) -> dict | None:
    """What a launched rank needs to rebuild a loader (it re-shards it anyway)."""
    if loader is None:
        return None
    _check_loader(loader)
    return {"dataset": loader.dataset, "batch_size": loader.batch_size, "num_workers": loader.num_workers,
            "collate_fn": loader.collate_fn, "shuffle": isinstance(loader.sampler, torch.utils.data.RandomSampler)}


def loader_from_parts(parts) -> DataLoader | None:
    if parts is None:
        return None
    return DataLoader(parts["dataset"], batch_size=parts["batch_size"], shuffle=parts["shuffle"],
                      num_workers=parts["num_workers"], collate_fn=parts["collate_fn"])


def threads_per_process(world: int) -> int:
    """This machine's threads shared among ``world`` processes (at least one each)."""
    return max(1, torch.get_num_threads() // world)


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker(index, payload_path, host, port, world, backend, threads, train_fn):
    """Rank ``index + 1``: join the group, rebuild the call from the payload, train, leave."""
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device((index + 1) % torch.cuda.device_count())
    store = torch.distributed.TCPStore(host, port, world, is_master=False, timeout=TIMEOUT)
    torch.distributed.init_process_group(backend, store=store, rank=index + 1, world_size=world, timeout=TIMEOUT)
    try:
        call = load_payload(payload_path)
        placement.set_channels_last(call.get("channels_last", False))  # rank 0's process-wide choice
        train_fn(call["model"], loader_from_parts(call["train"]), loader_from_parts(call["val"]),
                 *call["args"], **call["kwargs"])
    finally:
        torch.distributed.destroy_process_group()


def launch(train_fn, world: int, model, train_loader, val_loader, args: tuple, kwargs: dict):
    """Run ``train_fn(model, train_loader, val_loader, *args, **kwargs)`` on ``world`` processes.

    This process is rank 0 and returns what its ``train_fn`` returns; ``kwargs["device"]`` picks
    the backend. ``train_fn`` must be importable (spawned ranks look it up by name). Ranks 1..N-1
    get ``log=None, progress=False``; an error in any rank is raised here with its traceback.
    """
    import torch.multiprocessing as mp

    if world < 2:
        raise ValueError(f"launch() needs world >= 2, got {world}.")
    backend = backend_for(kwargs["device"])
    if backend == "nccl" and torch.cuda.device_count() < world:
        raise ValueError(f"world_size={world} needs {world} GPUs, this machine has {torch.cuda.device_count()}; "
                         "lower world_size, or use torchrun across machines.")
    threads = threads_per_process(world)
    host = "127.0.0.1"
    store = torch.distributed.TCPStore(host, 0, world, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="dc-ddp-") as tmp:
        payload = Path(tmp) / "call.pt"
        try:
            save_payload({"model": model, "train": loader_parts(train_loader), "val": loader_parts(val_loader),
                          "args": args, "kwargs": {**kwargs, "log": None, "progress": False},
                          "channels_last": placement.channels_last_enabled()}, payload)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(f"world_size={world} starts {world - 1} more process(es), which need the model and "
                            f"datasets pickled, and that failed ({exc}). Define model classes and datasets in "
                            "an importable module, or launch with torchrun (nothing is pickled then).") from exc
        if START_METHOD == "forkserver":
            # DDP's constructor imports torch._dynamo (6 s here): once in the server, not per fit
            mp.get_context("forkserver").set_forkserver_preload(["helpers.training", "torch._dynamo"])  # once per server: later fits fork warm
        ranks = mp.start_processes(_worker, args=(str(payload), host, store.port, world, backend, threads, train_fn),
                                   nprocs=world - 1, join=False, start_method=START_METHOD)
        try:
            with _threads(threads):
                torch.distributed.init_process_group(backend, store=store, rank=0, world_size=world, timeout=TIMEOUT)
                try:
                    result = train_fn(model, train_loader, val_loader, *args, **kwargs)
                finally:
                    torch.distributed.destroy_process_group()
        except BaseException as error:
            _stop(ranks, error)
            raise
        while not ranks.join():  # raises ProcessRaisedException with the failing rank's traceback
            pass
    return result


def _stop(ranks, error: BaseException) -> None:
    """Rank 0 failed. A broken connection means another rank failed first: raise that rank's error.

    gloo and NCCL report a dead peer as a RuntimeError; rank 0's own errors (an interrupt, a
    diverged loss, a bad argument) end the other ranks at once.
    """
    if isinstance(error, RuntimeError):
        try:
            ranks.join(timeout=60)
        except Exception as cause:
            raise cause from error
    for process in ranks.processes:
        if process.is_alive():
            process.terminate()
            process.join(5)

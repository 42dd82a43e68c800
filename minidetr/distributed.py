"""Data-parallel training with ``torchrun``: one process per GPU (or CPU process on gloo), the same entry point.

``torchrun --nproc_per_node=N -m minidetr.train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in each
process; ``init_distributed()`` reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without
them it does nothing and everything below degrades to the single-process case, so ``fit`` has one code path.
Each process sees its own shard of the data (``DistributedSampler``, reshuffled per epoch by
``minidetr.data.set_epoch``); DDP averages gradients, so every replica takes the same step; only rank 0 writes
logs and checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

_log = logging.getLogger("minidetr.train")

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "reduce_dict",
    "all_gather_objects",
    "touch_all_parameters",
    "wrap_model",
    "cleanup",
]


def is_distributed() -> bool:
    """True inside an initialised torch.distributed process group (torchrun), else False."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank under torch.distributed, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of training processes, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0: the one process that prints, logs and writes checkpoints. Before torch.distributed starts
    (the command line reading its flags), torchrun's ``RANK`` says which process this is."""
    if is_distributed():
        return get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class DistInfo:
    distributed: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def init_distributed(device: torch.device | str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op when they are absent).

    Backend: NCCL when ``device`` is CUDA (each process then uses ``cuda:LOCAL_RANK``), gloo otherwise.
    Calling it again in an initialised process returns the current info.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(False)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if world <= 1:
        return DistInfo(False, rank, local_rank, world)
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not is_distributed():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(True, rank, local_rank, world)


def barrier() -> None:
    """Wait for every process (no-op alone): e.g. before reading a checkpoint rank 0 has just written."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over processes (a new tensor; ``x`` itself when alone)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / get_world_size()


def reduce_dict(values: dict[str, Tensor]) -> dict[str, float]:
    """Means over processes of a dict of scalar tensors, as Python floats: one collective and one device-to-host
    copy for all of them (the training loop's loss terms, every step)."""
    if not values:
        return {}
    keys = list(values)
    stacked = all_reduce_mean(torch.stack([values[k].detach().float() for k in keys]))
    return dict(zip(keys, stacked.tolist(), strict=True))


def all_gather_objects(obj: object) -> list:
    """``obj`` from every process, in rank order (``[obj]`` alone); every process must call it (pickled)."""
    if not is_distributed():
        return [obj]
    gathered: list = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def touch_all_parameters(loss: Tensor, model: nn.Module) -> Tensor:
    """``loss + 0 * (one entry of every trainable parameter)`` under DDP (``loss`` itself otherwise).

    Same value, same gradients, but every parameter takes part in backward, so DDP's gradient all-reduce never
    waits for a parameter one rank did not use this step: a batch without targets skips the denoising
    embedding, and without this the other ranks hang (lyuwenyu/RT-DETR#672). Cheaper than
    ``find_unused_parameters=True``, which searches the graph every step.
    """
    if not is_distributed():
        return loss
    params = [p.view(-1)[:1] for p in model.parameters() if p.requires_grad]
    return loss + 0.0 * torch.cat(params).sum() if params else loss


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed (else ``model``).

    ``sync_bn`` converts BatchNorm to SyncBatchNorm (DEIM trains with it; CUDA only, so ignored on CPU).
    """
    if not is_distributed():
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_bn and is_main_process():  # once per run, not once per process
        _log.warning("sync_bn applies on CUDA only: each process keeps its own BatchNorm statistics on %s", device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()

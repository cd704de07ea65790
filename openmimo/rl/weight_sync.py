"""The trainer's weights to the rollout workers by a collective broadcast over a process group of their own.

:class:`WeightGroup` is one member of a group of ``1 + workers`` processes: rank 0 the trainer (it sends), ranks
1..W the rollout workers (:mod:`openmimo.rl.ray_rollout`; they receive).  The group is built from a TCP store that
the trainer serves (:func:`serve_store`) and the workers join, as a standalone process group (NCCL between GPUs,
gloo otherwise), so it neither needs nor disturbs a default process group (``torchrun``'s).

A broadcast sends the parameters in a fixed order, cast to the workers' dtype and packed into flat buckets of at
most ``bucket_bytes`` (:func:`plan`: both sides derive the same buckets from the same names and shapes); each worker
unpacks a bucket into its engine's parameters in place.  So the trainer sends the weights once per bucket to every
worker at the interconnect's speed, where the object-store path copies them through host memory.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

BUCKET_BYTES = 256 * 2**20


def serve_store(host: str, world: int, timeout_s: float = 300.0) -> dist.TCPStore:
    """The group's TCP store on a free port of ``host`` (its ``.port``), served by the trainer."""
    return dist.TCPStore(host, 0, world, True, datetime.timedelta(seconds=timeout_s), wait_for_workers=False)


def plan(numels: list[int], elem_bytes: int, bucket_bytes: int = BUCKET_BYTES) -> list[list[int]]:
    """Consecutive parameter indices per bucket: each bucket holds at most ``bucket_bytes`` (one parameter alone
    when it is larger)."""
    buckets, cur, size = [], [], 0
    for i, n in enumerate(numels):
        if cur and size + n * elem_bytes > bucket_bytes:
            buckets.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n * elem_bytes
    return buckets + ([cur] if cur else [])


class WeightGroup:
    """One member of the weight-broadcast group (rank 0 sends, the others receive); see the module docstring."""

    def __init__(self, store: dist.Store, rank: int, world: int, backend: str = "gloo", timeout_s: float = 300.0):
        timeout = datetime.timedelta(seconds=timeout_s)
        if backend == "nccl":
            self.pg = dist.ProcessGroupNCCL(store, rank, world, dist.ProcessGroupNCCL.Options())
            self.device = torch.device("cuda", torch.cuda.current_device())
        elif backend == "gloo":
            self.pg = dist.ProcessGroupGloo(store, rank, world, timeout)
            self.device = torch.device("cpu")
        else:
            raise ValueError(f"backend={backend!r}: expected nccl or gloo")
        self.rank, self.world, self.backend = rank, world, backend

    @classmethod
    def join(cls, host: str, port: int, rank: int, world: int, backend: str = "gloo", timeout_s: float = 300.0):
        """A worker's member: connect to the trainer's store at ``host:port``."""
        store = dist.TCPStore(host, port, world, False, datetime.timedelta(seconds=timeout_s))
        return cls(store, rank, world, backend, timeout_s)

    def _broadcast(self, flat: torch.Tensor) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([flat], opts).wait()

    def send(self, tensors: list[torch.Tensor], dtype: torch.dtype, bucket_bytes: int = BUCKET_BYTES) -> int:
        """Rank 0: broadcast ``tensors`` (in the order the receivers expect) as ``dtype``; returns the bytes sent."""
        elem = torch.empty((), dtype=dtype).element_size()
        sent = 0
        for bucket in plan([t.numel() for t in tensors], elem, bucket_bytes):
            flat = torch.cat([tensors[i].detach().reshape(-1).to(self.device, dtype) for i in bucket])
            self._broadcast(flat)
            sent += flat.numel() * elem
        return sent

    def receive(self, shapes: list[torch.Size], dtype: torch.dtype, bucket_bytes: int = BUCKET_BYTES):
        """Ranks 1..: receive what :meth:`send` broadcasts; yields (indices, tensors) per bucket (views of one flat
        buffer, valid until the next bucket arrives)."""
        elem = torch.empty((), dtype=dtype).element_size()
        numels = [int(torch.Size(s).numel()) for s in shapes]
        for bucket in plan(numels, elem, bucket_bytes):
            flat = torch.empty(sum(numels[i] for i in bucket), dtype=dtype, device=self.device)
            self._broadcast(flat)
            parts = flat.split([numels[i] for i in bucket])
            yield bucket, [p.view(shapes[i]) for p, i in zip(parts, bucket)]

    def close(self) -> None:
        self.pg = None

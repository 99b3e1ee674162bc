"""Data-parallel ranks: which process this is, and the few collectives a step needs.

`accelerate launch` (torchrun underneath) starts one process per GPU and sets RANK,
WORLD_SIZE and LOCAL_RANK; accelerate's PartialState opens the torch.distributed process
group (NCCL on GPUs, gloo on CPUs). A plain `minisir run` is one rank and imports none of it.

Every collective here turns a lost peer (a killed or crashed rank) into one line: the step
in flight is simply not committed, and rerunning the command resumes.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

from .errors import MinisirError

T = TypeVar("T")

# Rank 0 may evaluate or write for a long time while the others wait in a collective;
# a dead peer is noticed at once (its sockets close), so only a hung one waits this long.
COLLECTIVE_TIMEOUT = timedelta(hours=3)
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class RankLost(MinisirError):
    """A collective failed: another rank died or the process group broke."""


def launched_world_size() -> int:
    """Ranks the launcher started (1 for a plain `minisir run`)."""
    for name in _WORLD_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def check_launch() -> None:
    """Refuse a CPU launch in which accelerate started one process where the user asked for several.

    `accelerate launch --cpu --num_processes N` without --mpirun_hostfile runs the script once
    (it expects mpirun to start the ranks); training would silently run on one rank.
    """
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if cpu and os.environ.get("MASTER_ADDR") and launched_world_size() == 1 and "LOCAL_RANK" not in os.environ:
        raise MinisirError(
            "accelerate launch --cpu started one process, not --num_processes of them (on CPUs accelerate "
            "expects mpirun); use `accelerate launch --multi_gpu --num_processes N -m minisir run ...` "
            "(torchrun starts the ranks; minisir uses gloo when there is no GPU) or add --mpirun_hostfile")


@dataclass
class Ranks:
    """This process's place among the data-parallel ranks."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """One rank unless a launcher started several; then join their process group."""
        check_launch()
        if launched_world_size() <= 1:
            return cls()
        import torch
        from accelerate import PartialState

        try:
            state = PartialState(cpu=not torch.cuda.is_available(), timeout=COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise RankLost(f"cannot join the other ranks ({_first_line(exc)}); check the launcher's "
                           "MASTER_ADDR/MASTER_PORT and that every rank started") from None
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        # Backstop for exits that skip close() (an error on this rank): the group must go before
        # the interpreter does, or gloo's worker threads abort the process at exit.
        atexit.register(_destroy_group)
        return cls(state.process_index, state.num_processes, state.local_process_index, local_world)

    def close(self, in_step: bool = False) -> None:
        """Leave the process group, in step with the other ranks, before this process exits.

        A rank that exits with its gloo group alive dies with SIGABRT ("terminate called without
        an active exception": gloo's threads are still joinable when C++ tears down). The barrier
        keeps a rank that finished early from tearing down while the others still talk to it; it
        is skipped when this rank leaves mid-step (`in_step`), since the others then wait in
        another collective.
        """
        if self.world == 1:
            return
        try:
            if not in_step:
                self.barrier("finishing")
        finally:
            _destroy_group()

    # ------------------------------------------------------------------ sharing work
    def share(self, total: int) -> range:
        """This rank's contiguous share of `total` work items (sizes differ by at most one)."""
        return range(self.rank * total // self.world, (self.rank + 1) * total // self.world)

    # ------------------------------------------------------------------ collectives
    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated in rank order, on every rank."""
        if self.world == 1:
            return list(items)
        from accelerate.utils import gather_object

        return self._guard("gathering samples", lambda: list(gather_object(list(items))))

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return self._guard("receiving rank 0's results", lambda: broadcast_object_list([value], from_process=0)[0])

    def sum_(self, tensor):
        """Sum `tensor` over the ranks, in place (gradients, loss sums)."""
        if self.world == 1:
            return tensor
        import torch.distributed as dist

        self._guard("summing gradients", lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
        return tensor

    def barrier(self, what: str) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        self._guard(what, dist.barrier)

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (RuntimeError, ConnectionError) as exc:  # DistBackendError is a RuntimeError
            raise RankLost(
                f"rank {self.rank} of {self.world} lost the other ranks while {what} ({_first_line(exc)}); "
                "the step in flight was not committed: rerun the same command to resume") from None


def _destroy_group() -> None:
    """Destroy the default process group if one is open (idempotent)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class ShardedSampler:
    """A sampler whose `generate` splits the (prompt, sample) work over the ranks.

    Each rank samples a contiguous share of the flattened work with its own local sampler,
    drawing the streams (seed, prompt, sample) a single process would draw, so the draws do
    not depend on the number of ranks; the results are gathered so every rank returns the
    whole step's completions, each tagged with the rank that sampled it. Everything else
    (tokenizer, adapters, scoring) is the local sampler's.
    """

    def __init__(self, local, ranks: Ranks):
        self.local = local
        self.ranks = ranks

    def __getattr__(self, name: str):
        return getattr(self.local, name)

    def generate(self, prompts, n: int = 1, progress=None, **kwargs):
        """Same contract as Sampler.generate (uniform n), with the work shared out."""
        mine = self.ranks.share(len(prompts) * n)
        local_prompts, counts, streams = [], [], []
        for p in range(len(prompts)):  # this rank's items of prompt p: [lo, hi) of its n samples
            lo, hi = max(mine.start - p * n, 0), min(mine.stop - p * n, n)
            if hi > lo:
                local_prompts.append(prompts[p])
                counts.append(hi - lo)
                streams.append((p, lo))
        done = []
        if local_prompts:
            groups = self.local.generate(local_prompts, n=counts, progress=progress, streams=streams, **kwargs)
            for (p, lo), group in zip(streams, groups):
                for j, c in enumerate(group):
                    c.rank = self.ranks.rank
                    done.append((p, lo + j, c))
        results: list[list] = [[None] * n for _ in prompts]
        for p, j, c in self.ranks.gather(done):
            results[p][j] = c
        return results

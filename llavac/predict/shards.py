"""The processes of a sharded prediction job, as ``torchrun`` (or ``accelerate launch``) starts
them: ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` come from the launcher's environment, across
machines too (torchrun's ``--nnodes`` / ``--rdzv-*`` flags). Ranks only need to wait for each
other and exchange a few small objects, so a gloo group does it on any machine, GPUs or not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

# A rank waits at the final barrier for the slowest shard; shards are within a batch of each
# other, but loading a large model may take a while on a busy machine.
BARRIER_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                   int(env.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self) -> None:
        """Join the launcher's process group (once)."""
        import torch.distributed as dist

        if self.sharded and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)

    def barrier(self) -> None:
        if self.sharded:
            import torch.distributed as dist

            dist.barrier()

    def from_main(self, value):
        """``value`` as the main process has it (every rank gets the same)."""
        if not self.sharded:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, by rank."""
        if not self.sharded:
            return [value]
        import torch.distributed as dist

        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def stop(self) -> None:
        import torch.distributed as dist

        if self.sharded and dist.is_initialized():
            dist.destroy_process_group()


def default_workers(shard: Shard) -> int:
    """DataLoader workers per process: the cores this machine gives each process, less the one
    the model runs on, at most 4 (beyond that a 7B model on a GPU gains nothing)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cores or 1) // shard.local_world - 1))

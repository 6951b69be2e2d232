"""The global batch: what one optimizer step averages over, whatever the hardware.

LLaVA's ``finetune_task_lora.sh`` gives 16 examples *per device*, so its optimizer step
averages over 16 examples on one GPU and over 128 on the eight it was written for; the
LLaVAC paper says 16. ``train.global_batch_size`` names the step's batch itself, and the
hardware only decides how it is cut:

    global batch = micro batch (per device) x processes x accumulation steps

``train.micro_batch_size`` is what fits in one device's memory (unset: the global batch
shared by the processes, no accumulation); the accumulation follows. 0.2's keys
(``train.batch_size`` per device, ``train.grad_accum``) still read: set, they define the
batch as they did, growing with the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers.trainer_pt_utils import BatchRebalanceSampler

from llavac.args import TrainArgs

# 0.2's defaults for a config that sets only one of its two keys.
_V02_PER_DEVICE, _V02_ACCUMULATION = 16, 1


@dataclass(frozen=True)
class GlobalBatch:
    per_device: int
    processes: int
    accumulation: int
    legacy: bool = False  # from 0.2's train.batch_size / train.grad_accum

    @classmethod
    def of(cls, training_args) -> GlobalBatch:
        """The batch a Trainer's ``TrainingArguments`` run with."""
        return cls(training_args.per_device_train_batch_size, training_args.world_size,
                   training_args.gradient_accumulation_steps)

    @property
    def size(self) -> int:
        return self.per_device * self.processes * self.accumulation

    def describe(self) -> str:
        """The line a run starts with: ``global batch 16 = 4 per device x 2 processes x 2
        accumulation steps``."""
        line = (f"global batch {self.size} = {self.per_device} per device x "
                f"{_count(self.processes, 'process', 'processes')} x "
                f"{_count(self.accumulation, 'accumulation step', 'accumulation steps')}")
        if self.legacy:
            line += (" (0.2's train.batch_size x train.grad_accum x processes, so "
                     "train.global_batch_size is not used)")
        return line

    def facts(self) -> dict:
        """For the run's manifest."""
        return {"global": self.size, "per_device": self.per_device,
                "processes": self.processes, "accumulation": self.accumulation}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def global_batch(args: TrainArgs, processes: int) -> GlobalBatch:
    """How ``args``' batch is cut on ``processes`` processes; a global batch that does not
    divide is a ``ValueError`` naming the keys."""
    if args.batch_size is not None or args.grad_accum is not None:
        per_device = _V02_PER_DEVICE if args.batch_size is None else args.batch_size
        accumulation = _V02_ACCUMULATION if args.grad_accum is None else args.grad_accum
        return GlobalBatch(per_device, processes, accumulation, legacy=True)
    micro = args.micro_batch_size
    if micro is None:
        if args.global_batch_size % processes:
            raise ValueError(
                f"train.global_batch_size={args.global_batch_size} does not divide among "
                f"{processes} processes: set train.micro_batch_size, and a global batch that "
                f"is a multiple of it x {processes}")
        return GlobalBatch(args.global_batch_size // processes, processes, 1)
    if args.global_batch_size % (micro * processes):
        raise ValueError(
            f"train.global_batch_size={args.global_batch_size} is not a multiple of "
            f"train.micro_batch_size={micro} x {_count(processes, 'process', 'processes')}")
    return GlobalBatch(micro, processes, args.global_batch_size // (micro * processes))


def length_grouped_sampler(lengths: list[int], batch: GlobalBatch, rank: int, seed: int,
                           drop_last: bool) -> BatchRebalanceSampler:
    """``train.group_by_length``: each step's global batch is drawn at random, as without
    grouping, then sorted by length and cut into this rank's micro batches so that examples
    of similar length are padded together. LLaVA's ``group_by_modality_length`` likewise only
    arranges the examples within one step's batch (every MVSA pair has an image, so its
    modality split does nothing); transformers' ``BatchRebalanceSampler`` does it with
    micro batches of balanced cost. The loss is averaged over the step's tokens, so the
    arrangement changes the padding and the memory, not the gradient."""
    return BatchRebalanceSampler(lengths, effective_batch_size=batch.size,
                                 dp_size=batch.processes, grad_accum=batch.accumulation,
                                 seed=seed, rank=rank, drop_last=drop_last)

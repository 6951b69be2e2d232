"""The steps ``gpu_check.py`` times: LoRA training and score / generate, on the GPU or, in the
dry run, on the CPU through the same code.

``Setup`` holds what differs between the two runs; each phase returns its figures by name
(``None`` where no batch fits the card) and leaves printing and planning to ``gpu_check.py``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from _common import Clock, peak_rss_mb
from _flops import prefill_flops, train_flops
from _memory import GB


@dataclass
class Setup:
    """What differs between the GPU run and the dry run; everything else is shared."""

    device: torch.device
    sizes: dict  # LLAVA_7B_SIZES on the GPU; {} (the tiny defaults) in the dry run
    batch: int
    score_batches: tuple[int, int]
    generate_batch: int
    name: str
    peak: float | None  # the card's dense bf16 TFLOPS, for MFU

    @property
    def dry(self) -> bool:
        return self.device.type != "cuda"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def collator(processor):
    """The project's ``TrainCollator`` as a default training run builds it: the full prompt,
    no prefix-LM, ``train.max_length``'s default (the 7B plan measures its sample length)."""
    from llavac.args import TrainArgs
    from llavac.prompt import PromptFormat
    from llavac.train.collator import TrainCollator

    return TrainCollator(processor, PromptFormat.from_name("full"), False, TrainArgs().max_length)


# -- 2. LoRA training -----------------------------------------------------------------------

def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float:
    """Peak device memory (a GPU) or peak RSS (the dry run's CPU) in GB of 1e9."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GB
    return peak_rss_mb() * 2**20 / GB


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def train_steps(model, batches, setup: Setup, steps: int, warmup: int,
                checkpointing: bool) -> tuple[list[float], list[int], float]:
    """Warm-up + timed LoRA steps on pre-collated ``batches`` (cycled), as the Trainer runs
    them: (seconds per timed step, tokens per timed step, the last loss)."""
    from llavac.args import LoraArgs, TrainArgs
    from llavac.train.recipe import split_projector_groups

    args, lora = TrainArgs(), LoraArgs()
    if checkpointing:  # as the Trainer applies train.gradient_checkpointing (the recipe's kwargs)
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = split_projector_groups(
        torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay), model,
        lora.projector_lr)
    clock = Clock(setup.device)

    def step(inputs):
        with setup.autocast():
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # the Trainer's max_grad_norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    times, tokens = [], []
    try:
        for i in range(warmup + steps):
            inputs = {k: v.to(setup.device) if torch.is_tensor(v) else v
                      for k, v in batches[i % len(batches)].items()}
            seconds, loss = clock(lambda inputs=inputs: step(inputs))
            if i >= warmup:
                times.append(seconds)
                tokens.append(int(inputs["attention_mask"].sum()))
        return times, tokens, float(loss.detach())
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.activation_checkpointing_disable()


def collated_batches(processor, records, batch: int) -> list[dict]:
    collate = collator(processor)
    return [collate(records[i:i + batch]) for i in range(0, 2 * batch, batch)]


def train_phase(model, processor, records, setup: Setup, args, counts, batch: int,
                checkpointing: bool) -> dict | None:
    """Training with checkpointing on or off from ``batch``, halving it until it fits."""
    setting = "on" if checkpointing else "off"
    while batch >= 1:
        batches = collated_batches(processor, records, batch)
        reset_peak(setup.device)
        try:
            times, tokens, loss = train_steps(model, batches, setup, args.steps, args.warmup,
                                              checkpointing)
            break
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error):
                raise
        # out of the except block: the traceback no longer holds the activations
        print(f"train, gradient checkpointing {setting}: batch {batch} does not fit; halving",
              flush=True)
        model.zero_grad(set_to_none=True)
        batch //= 2
    else:
        print(f"train, gradient checkpointing {setting}: no batch fits", flush=True)
        return None
    step_s, mean_tokens = statistics.median(times), sum(tokens) / len(tokens)
    flops = train_flops(counts, mean_tokens / batch, model.config.image_seq_length) * batch
    return {"batch": batch, "step_s": step_s, "tokens_per_s": mean_tokens / step_s,
            "samples_per_s": batch / step_s, "tflops": flops / step_s / 1e12,
            "mfu": flops / step_s / (setup.peak * 1e12) if setup.peak else None,
            "peak_gb": peak_gb(setup.device), "tokens_per_sample": mean_tokens / batch,
            "loss": loss}


# -- 3. score and generate through the project's classifier ----------------------------------

def predict_phase(classifier, records, setup: Setup, args, counts, method: str,
                  batch: int) -> dict | None:
    """``score`` or ``generate`` (the whole answer budget) on ``batch`` prompts; its figures."""
    from llavac.data import open_rgb
    from llavac.predict.batching import encode_prompts
    from llavac.predict.generation import generate_answers

    model, processor = classifier.model, classifier.processor
    images = [open_rgb(record.image) for record in (records * 4)[:batch]]
    texts = [record.text for record in (records * 4)[:batch]]
    encoded = encode_prompts(processor, classifier.fmt, images, texts, model)
    if method == "score":
        def call():
            return classifier.scorer.score(encoded)
    else:
        def call():
            answers = generate_answers(model, processor.tokenizer, encoded,
                                       classifier.max_new_tokens)
            return [classifier.fmt.parse(answer) for answer in answers]
    clock = Clock(setup.device)
    reset_peak(setup.device)
    try:
        clock(call)  # warm-up
        times = [clock(call)[0] for _ in range(args.repeats)]
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not is_oom(error):
            raise
        print(f"{method} batch {batch}: out of memory", flush=True)
        return None
    seconds = statistics.median(times)
    tokens = float(encoded.attention_mask.sum()) / batch
    flops = prefill_flops(counts, tokens, model.config.image_seq_length) * batch
    return {"batch": batch, "seconds": seconds, "samples_per_s": batch / seconds,
            "prompt_tokens": tokens, "tflops": flops / seconds / 1e12,
            "peak_gb": peak_gb(setup.device),
            "mfu": flops / seconds / (setup.peak * 1e12) if setup.peak else None}

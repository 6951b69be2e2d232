"""The LLaVAC fine-tuning recipe: setup -> fit -> save.

    llavac train --config tiny_synthetic
    llavac train --model llava-hf/llava-1.5-7b-hf --data MVSA_Single --procedure qmf
    torchrun --nproc_per_node 4 -m llavac.cli train --data MVSA_Single --procedure qmf \
        train.micro_batch_size=4

Supports:
- LoRA on every linear layer of the language model (the paper), projector trained in full
  at its own learning rate; or full fine-tuning (``train.tuning=full``); QLoRA with
  ``model.load_in_4bit=true`` on CUDA.
- Mixed precision as DeepSpeed's bf16 optimizer does it for LLaVA: every trainable parameter
  is held and updated in fp32 while the forward and backward run in bf16 (``train.bf16``) or
  ``model.dtype``; frozen weights stay in ``model.dtype``.
- A global batch that does not depend on the hardware (``llavac.train.batch``), length
  grouping within each step's batch (``train.group_by_length``) and TF32 on CUDA, as LLaVA's
  script.
- Any model the factory loads: LLaVA-1.5 / NeXT checkpoints and the built-in tiny models.
- The three prompt variants of ``llavac.prompt``.
- Checkpoints every ``train.save_steps`` that survive a kill at any moment, and ``--resume``
  from the newest complete one (optimizer, scheduler, RNG and data position restored by the
  Trainer; ``llavac.train.checkpoints``).
- Data parallel under ``torchrun`` / ``accelerate launch`` (DDP; gloo on CPU). DeepSpeed
  ZeRO-3 (``train.deepspeed=llavac/configs/zero3.json``) and FSDP (``train.fsdp=...``)
  through the Trainer's own arguments, for GPU users.

The output folder holds ``adapter/`` (or ``model/``), ``processor/``, ``config.yaml``,
``trained_on.json`` (for the evaluation's leakage guard), ``versions.json``, ``log.jsonl``,
``loss.png`` and, last, ``manifest.json`` (data, skipped records, model); ``checkpoints/``
holds the resumable states.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.utils import is_torch_tf32_available

from llavac.args import LoraArgs, TrainArgs, TrainConfig
from llavac.console import is_main_process, log
from llavac.data import Record, load_data
from llavac.data.records import empty_part
from llavac.labels import slot_labels
from llavac.models import (
    apply_inputs,
    frozen_vision_parameters,
    image_limits,
    is_prefix_lm,
    language_model_linear_names,
    load_model,
    model_facts,
    model_type,
    peft_wrapping,
    projector_module_names,
    resolve_inputs,
)
from llavac.models.heads import HEADS_ATTR, attach_heads
from llavac.prompt import PromptFormat
from llavac.prompt.variants import load_variants
from llavac.runs.folder import TRAINED_ON_FILE, RunFolder
from llavac.runs.info import write_run_files
from llavac.runs.leakage import trained_on
from llavac.train.batch import GlobalBatch, global_batch, length_grouped_sampler
from llavac.train.checkpoints import (
    CrashSafeTrainer,
    ResumePoint,
    find_resume_point,
    remove_skipped,
    run_config_hash,
)
from llavac.train.claim import prepare_output, record_start
from llavac.train.collator import TrainCollator
from llavac.train.head import HeadCollator, HeadLoss
from llavac.train.precision import compute_dtype, engine_keeps_masters, upcast_trainable
from llavac.train.progress import replace_trainer_output
from llavac.train.steplog import StepLog, plot_loss
from llavac.train.variants import LORA_VARIANTS, PISSA_INIT, save_pissa_as_lora


def make_trainable(model, lora: LoraArgs, method: str = "lora"):
    """LoRA adapters (``lora.variant``) on the language model's linear layers (+ the
    projector and any classification heads in full), or, with ``method="full"``, the whole
    language model and projector; the vision tower stays frozen either way, as in LLaVA."""
    projector = projector_module_names(model)
    if method == "full":
        frozen = set(frozen_vision_parameters(model))
        for name, param in model.named_parameters():
            param.requires_grad = name not in frozen
        return model
    if getattr(model, "is_loaded_in_4bit", False):  # QLoRA: norms in fp32, input grads on
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    heads = [HEADS_ATTR] if hasattr(model, HEADS_ATTR) else []
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=language_model_linear_names(model),
        modules_to_save=(projector if lora.train_projector else []) + heads or None,
        **LORA_VARIANTS[lora.variant],
    )
    with peft_wrapping():
        return get_peft_model(model, config)


class ProjectorLrTrainer(CrashSafeTrainer):
    """The Trainer with the projector at its own learning rate (LLaVA's ``mm_projector_lr``)
    and, given the examples' ``lengths``, each step's batch arranged by length.

    The Trainer builds its optimizer as always (its optimizer class and settings, biases and
    norms without weight decay, from the model it has wrapped by then, so FSDP and DeepSpeed
    parameters are the ones held); the projector's parameters are then moved into groups of
    their own.
    """

    def __init__(self, *args, projector_lr: float | None, lengths: list[int] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.projector_lr = projector_lr
        # train.group_by_length: the examples' token counts, for length_grouped_sampler.
        self.lengths = lengths

    def _get_train_sampler(self, train_dataset=None):
        if self.lengths is None:
            return super()._get_train_sampler(train_dataset)
        args = self.args
        return length_grouped_sampler(self.lengths, GlobalBatch.of(args), args.process_index,
                                      args.seed, args.dataloader_drop_last)

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.projector_lr is not None:
            split_projector_groups(optimizer, self.model if model is None else model,
                                   self.projector_lr)
        return optimizer


class HeadTrainer(HeadLoss, ProjectorLrTrainer):
    """The projector-rate Trainer with the head objective's loss (``llavac.train.head``)."""


def split_projector_groups(optimizer, model, projector_lr: float):
    """Move the projector's parameters out of ``optimizer``'s groups into copies of those
    groups (same weight decay and settings) at ``projector_lr``; drop groups left empty."""
    projector = tuple(f"{name}." for name in projector_module_names(model))
    moved = {id(p) for n, p in model.named_parameters() if any(m in n for m in projector)}
    for group in list(optimizer.param_groups):
        mine = [p for p in group["params"] if id(p) in moved]
        if mine:
            group["params"] = [p for p in group["params"] if id(p) not in moved]
            optimizer.add_param_group({**group, "params": mine, "lr": projector_lr})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    return optimizer


def require_labels(records, fmt: PromptFormat, source) -> None:
    """Every training record needs the labels its prompt's answer names."""
    missing = [r.id for r in records if any(slot_labels(r)[slot] is None for slot in fmt.slots)]
    if missing:
        hint = " (or train.prompt=multimodal-only)" if fmt.slots != ("multimodal",) else ""
        raise ValueError(
            f"{source}: {len(missing)} training records lack a label the '{fmt.name}' prompt "
            f"answers with, e.g. ids {missing[:5]}: label them{hint}"
        )


@dataclass
class Setup:
    """Everything ``fit`` needs, built by ``setup``."""

    records: list[Record]
    manifest: dict  # the data's, from load_split
    model: object  # peft-wrapped (LoRA) or with its trainable parameters unfrozen (full)
    processor: object
    collator: TrainCollator
    weights_dtype: torch.dtype  # the frozen weights' (model.dtype as loaded)
    batch: GlobalBatch  # how the global batch is cut on these processes


def train(config: TrainConfig, resume: bool = False,
          callbacks: list[TrainerCallback] | None = None, overwrite: bool = False) -> Path:
    """Fine-tune ``config.model`` on the train split of ``config.data``; return its output.

    ``resume``: continue from the newest complete checkpoint (a finished run is left as is);
    ``overwrite``: replace what the folder holds. An interrupted or finished run's folder is
    refused without either (``llavac.train.claim``).
    """
    config = with_input_defaults(config)
    output = Path(config.train.output)
    if not prepare_output(config, resume, overwrite):  # finished before: nothing to resume
        return output
    set_seed(config.train.seed)
    built = setup(config)
    record_start(config)
    trainer = fit(config, built, resume, callbacks or [])
    save(config, built, trainer)
    return output


def with_input_defaults(config: TrainConfig) -> TrainConfig:
    """``config`` with ``model.image_mode`` / ``model.system`` left unset filled in with the
    family's defaults (:mod:`llavac.models.inputs`), so the run records the inputs it was
    trained on and prediction reads them back from its ``config.yaml``."""
    if config.model.image_mode and config.model.system:
        return config
    image_mode, system = resolve_inputs(model_type(config.model.name), config.model.image_mode,
                                        config.model.system)
    model = dataclasses.replace(config.model, image_mode=image_mode, system=system)
    return dataclasses.replace(config, model=model)


def setup(config: TrainConfig) -> Setup:
    """Load the training records and the model, and make the model trainable. ``config``
    as :func:`train` resolved it: its input choices filled in (:func:`with_input_defaults`)."""
    # A global batch that does not divide is an error before anything is loaded.
    batch = global_batch(config.train, int(os.environ.get("WORLD_SIZE", "1")))
    split = load_data(config.data)
    # The paper trains on the train split only: no validation set, no early stopping. Own data
    # without a split (procedure "none") is trained on all of it. load_split has opened every
    # image, so a bad file is already skipped and counted in the manifest (or fatal with
    # data.strict) instead of crashing a data-loader worker.
    part, records = split.part(None, default="train")
    if not records:
        raise empty_part(config.data.path, part, split.manifest)
    fmt = PromptFormat.from_name(config.train.prompt, config.model.system)
    require_labels(records, fmt, config.data.path)
    # train.prompt_variants: every example asks one variant of the question (robustness),
    # read before the model is loaded so a bad file fails fast.
    variants = tuple(load_variants(config.train.prompt_variants, fmt).values()
                     if config.train.prompt_variants else ())
    for variant in variants:
        require_labels(records, variant, config.data.path)
    model, processor = load_model(
        config.model.name,
        dtype=config.model.dtype,
        attn_implementation=config.model.attn_implementation,
        load_in_4bit=config.model.load_in_4bit,
        seed=config.model.seed,
    )
    apply_inputs(processor, config.model.image_mode, config.model.system)  # saved in processor/
    limits = image_limits(processor, config.data.max_image_pixels, "data.max_image_pixels")
    collator_args = (processor, fmt, is_prefix_lm(model), config.train.max_length, variants,
                     config.train.seed, limits)
    if config.train.objective == "head":  # a head per slot the prompt asks, every stage reads
        attach_heads(model, fmt.slots)
        collator = HeadCollator(*collator_args, trained=tuple(config.train.slots or fmt.slots))
    else:
        collator = TrainCollator(*collator_args)
    weights_dtype = model.dtype
    model = make_trainable(model, config.lora, config.train.tuning)
    if config.lora.variant == "pissa" and is_main_process():
        model.save_pretrained(Path(config.train.output) / PISSA_INIT)
    if not engine_keeps_masters(config.train):
        upcast_trainable(model)  # fp32 master weights (llavac.train.precision)
    return Setup(records, split.manifest, model, processor, collator, weights_dtype, batch)


def fit(config: TrainConfig, built: Setup, resume: bool,
        callbacks: list[TrainerCallback]) -> Trainer:
    """Train with the Trainer, from the newest complete checkpoint when ``resume``; return
    the Trainer."""
    args = config.train
    output = Path(args.output)
    batch = built.batch
    training_args = trainer_arguments(args, RunFolder(output).checkpoints, batch,
                                      compute_dtype(args, built.weights_dtype))
    run_hash = run_config_hash(config)
    point = resume_point(Path(training_args.output_dir), run_hash) if resume else None
    if is_main_process():
        log.info(batch.describe())
    last = str(point.checkpoint) if point and point.checkpoint else None
    step_log = StepLog(output / "log.jsonl", batch.size, point.step if point else 0)
    trainer_class = HeadTrainer if config.train.objective == "head" else ProjectorLrTrainer
    trainer = trainer_class(
        model=built.model,
        args=training_args,
        data_collator=built.collator,
        train_dataset=built.records,
        callbacks=[step_log, *callbacks],
        projector_lr=config.lora.projector_lr,
        lengths=built.collator.lengths(built.records) if args.group_by_length else None,
        keep=args.save_total_limit,
        run_hash=run_hash,  # every checkpoint names its run's config
    )
    replace_trainer_output(trainer, batch.size, bar=args.progress)
    if point is not None and point.finished:
        # Killed during the final save: the last step's checkpoint holds the final weights.
        # (Trainer.train from a checkpoint at max_steps would run one step more.)
        trainer._load_from_checkpoint(last)
    else:
        trainer.train(resume_from_checkpoint=last)
    return trainer


def resume_point(checkpoints: Path, run_hash: str) -> ResumePoint:
    """The newest complete checkpoint of this run (another config's is refused), half-written
    ones removed; the main process prints one line saying where the run continues and why."""
    point = find_resume_point(checkpoints, run_hash)
    if is_main_process():
        for line in [*point.warnings(), point.message()]:
            log.info(line)
        remove_skipped(point)
    return point


def save(config: TrainConfig, built: Setup, trainer: Trainer) -> None:
    """The adapter (or model), processor, loss plot and run files; manifest.json last."""
    output = Path(config.train.output)
    folder = RunFolder(output)
    # Every rank enters save_model: under DeepSpeed ZeRO-3 or FSDP the weights are gathered
    # from all of them; only the main process writes.
    weights = folder.weight_folder("model" if config.train.tuning == "full" else "adapter")
    trainer.save_model(str(weights))
    if trainer.is_world_process_zero():
        if config.lora.variant == "pissa" and config.train.tuning == "lora":
            save_pissa_as_lora(built.model, weights, output / PISSA_INIT)
        built.processor.save_pretrained(folder.processor)
        records = trained_on(built.records)
        folder.write_trained_on(records)  # for the evaluation leakage guard
        manifest = {
            "data": built.manifest,
            "train_records": len(built.records),
            "trained_on": {"file": TRAINED_ON_FILE, "sha256": records["sha256"]},
            "model": model_facts(built.model),
            "image_processor": type(built.processor.image_processor).__name__,
            "world_size": trainer.args.world_size,
            "batch": GlobalBatch.of(trainer.args).facts(),
            "train_steps": trainer.state.global_step,
            # The Trainer's runtime of this session (after a resume: of the resumed part).
            "train_seconds": next((entry["train_runtime"] for entry in trainer.state.log_history
                                   if "train_runtime" in entry), None),
        }
        plot_loss(output / "log.jsonl", output / "loss.png")
        write_run_files(output, config, manifest)  # manifest.json last: the run is complete
    trainer.accelerator.wait_for_everyone()  # no rank returns before the run is on disk


def trainer_arguments(args: TrainArgs, checkpoints: Path, batch: GlobalBatch,
                      autocast: str | None) -> TrainingArguments:
    """The one place a ``TrainArgs`` section becomes the Trainer's ``TrainingArguments``;
    ``batch`` is how its global batch is cut, ``autocast`` the compute dtype
    (:func:`llavac.train.precision.compute_dtype`)."""
    on_cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=batch.per_device,
        gradient_accumulation_steps=batch.accumulation,
        learning_rate=args.lr,
        lr_scheduler_type=args.scheduler,
        warmup_steps=args.warmup_ratio,  # a value below 1 is a fraction of all steps
        weight_decay=args.weight_decay,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        bf16=autocast == "bf16",
        fp16=autocast == "fp16",
        tf32=True if args.tf32 and is_torch_tf32_available() else None,  # None: PyTorch's
        optim=args.optim,
        # train.group_by_length: the sampler is ProjectorLrTrainer's (length_grouped_sampler),
        # handed to the data loader as the batch sampler this strategy names.
        train_sampling_strategy="batch_rebalance" if args.group_by_length else "random",
        activation_checkpointing=args.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},  # works with frozen inputs
        save_strategy="steps",
        save_steps=args.save_steps,
        # Rotation (train.save_total_limit) is done by CrashSafeTrainer once the new
        # checkpoint is complete; the Trainer's own would run before that.
        save_total_limit=None,
        logging_steps=args.logging_steps,
        seed=args.seed,
        dataloader_num_workers=args.num_workers,
        dataloader_persistent_workers=args.num_workers > 0,  # not restarted every epoch
        remove_unused_columns=False,  # the collator needs the whole record
        disable_tqdm=not args.progress,
        # none | tensorboard | wandb | mlflow; TensorBoard writes under output_dir (the run's
        # checkpoints/runs/), wandb and mlflow where their own environment variables say.
        report_to=args.report_to,
        deepspeed=args.deepspeed,
        fsdp=args.fsdp or None,
        use_cpu=not on_cuda,
        # Under torchrun on CPU the processes talk through gloo (NCCL needs GPUs).
        ddp_backend="gloo" if batch.processes > 1 and not on_cuda else None,
    )

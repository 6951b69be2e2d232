"""One flag table per command: each flag sets one config key (see ``llavac.cli.options.Flag``).

A positional (``RUN``, ``PATH``) is a Flag too. Every output folder or file is ``--output``
(``--out``, 0.2's name for some, still reads with a warning); ``--resume`` and ``--overwrite``
set the command section's keys of those names.
"""

from __future__ import annotations

from llavac.cli.options import Flag


def folder_flags(section: str, resume: bool = False) -> list[Flag]:
    """``--overwrite`` (and ``--resume``) of a command that writes into ``section.output``."""
    flags = [Flag("--overwrite", f"{section}.overwrite", "replace a finished result there")]
    if resume:
        flags.append(Flag("--resume", f"{section}.resume", "continue the unfinished one"))
    return flags


DATA_FLAGS = [
    Flag("--data", "data.path", "exported split folder, MVSA release folder, or own-data file"),
    Flag("--procedure", "data.procedure",
         "with a release folder: cheema10 | random811 | clmlf | qmf | none"),
    Flag("--fold", "data.fold", "cheema10 fold, 1..10"),
    Flag("--split-seed", "data.split_seed", "random811 shuffle seed"),
    Flag("--strict", "data.strict", "a bad record is fatal instead of skipped and counted"),
]
CLASSIFIER_FLAGS = [
    Flag("--model", "model.name", "base model: hub id, local folder or tiny-* name"),
    Flag("--adapter", "model.adapter", "a training run folder or a peft adapter"),
    Flag("--prompt", "model.prompt", "prompt variant: full | multimodal-only | a slot order"),
    Flag("--dtype", "model.dtype", "float32 | bf16 | fp16 | auto"),
    Flag("--device", "model.device", "cpu | cuda | cuda:0 ..."),
    Flag("--image-mode", "model.image_mode",
         "pad | crop | processor; unset: the run's, else the family's"),
    Flag("--system", "model.system",
         "vicuna_v1 | llava_v1 | none | a system sentence; unset: the run's, else the "
         "family's"),
]
TRAIN_FLAGS = [
    Flag("--model", "model.name", "hub id, local path or tiny-* name"),
    *DATA_FLAGS,
    Flag("--image-mode", "model.image_mode",
         "pad | crop | processor; unset: the family's (LLaVA-1.5: pad, as the paper)"),
    Flag("--system", "model.system",
         "vicuna_v1 | llava_v1 | none | a system sentence; unset: the family's"),
    Flag("--output", "train.output", "output folder"),
    Flag("--tuning", "train.tuning", "lora | full"),
    Flag("--max-steps", "train.max_steps", "stop after N optimizer steps"),
    Flag("--save-steps", "train.save_steps", "checkpoint every N steps"),
    Flag("--seed", "train.seed", "training seed (data order, dropout, LoRA init)"),
]


def evaluation_flags(section: str) -> list[Flag]:
    """A classifier on one part of some data, into an output folder: ``evaluate`` and
    ``robustness`` alike (their section names differ)."""
    return [
        *CLASSIFIER_FLAGS,
        *DATA_FLAGS,
        Flag("--part", f"{section}.part", "train | validation | test | all"),
        Flag("--method", f"{section}.method", "score | generate"),
        Flag("--batch-size", f"{section}.batch_size", "pairs per model call"),
        Flag("--output", f"{section}.output", "output folder"),
        *folder_flags(section),
    ]


EVAL_FLAGS = [
    *evaluation_flags("eval"),
    Flag("--allow-overlap", "eval.allow_overlap",
         "report a run on records it trained on (refused otherwise)"),
    Flag("--reliance-pairs", "eval.reliance_pairs",
         "modality reliance on at most N pairs (2 more scoring passes each); 0: off"),
]
PREDICT_FLAGS = [
    *CLASSIFIER_FLAGS,
    Flag("--image", "predict.image", "one image ..."),
    Flag("--text", "predict.text", "... and its text"),
    Flag("--input", "predict.input", "or a JSONL / CSV / Parquet file or exported split"),
    Flag("--output", "predict.output", "write JSONL here instead of stdout", old="--out"),
    Flag("--method", "predict.method", "score | generate"),
    Flag("--batch-size", "predict.batch_size", "pairs per model call"),
    Flag("--min-confidence", "predict.min_confidence",
         "label a slot 'uncertain' when its top probability is below P"),
    Flag("--resume", "predict.resume", "continue the job in --output: skip the ids it holds"),
    Flag("--overwrite", "predict.overwrite", "replace an existing --output"),
    Flag("--strict", "predict.strict", "the first bad row is fatal (default: skip, report)"),
    Flag("--num-workers", "predict.num_workers", "DataLoader workers opening the images"),
    Flag("--limit", "predict.limit", "only the first N input rows"),
    Flag("--engine", "predict.engine", "local | ray (a Ray cluster; --output is then a folder)"),
    Flag("--ray-address", "predict.ray_address", "auto | ray://HOST:PORT (unset: a local Ray)"),
    Flag("--concurrency", "predict.concurrency", "Ray model actors (unset: one per GPU)"),
    Flag("--out-format", "predict.out_format", "jsonl | parquet result files (engine ray)"),
]
CALIBRATE_FLAGS = [
    Flag("--model", "model.name", "base model (default: the one the run names)"),
    Flag("--dtype", "model.dtype", "float32 | bf16 | fp16 | auto"),
    Flag("--device", "model.device", "cpu | cuda | cuda:0 ..."),
    *DATA_FLAGS,
    Flag("--batch-size", "calibrate.batch_size", "pairs per model call"),
    Flag("--overwrite", "calibrate.overwrite", "replace the run's calibration.json"),
]
SERVE_FLAGS = [
    *CLASSIFIER_FLAGS,
    Flag("--method", "serve.method", "score | generate"),
    Flag("--host", "serve.host", "address to bind; beyond loopback an API key is required"),
    Flag("--port", "serve.port", "TCP port"),
    Flag("--api-key", "serve.api_key", "required as 'Authorization: Bearer KEY' (several: "
         "comma-separated; also read from LLAVAC_API_KEY)"),
    Flag("--api-key-file", "serve.api_key_file", "keys, one per line"),
    Flag("--insecure-no-auth", "serve.insecure_no_auth", "allow a non-loopback host without "
         "any key"),
    Flag("--max-queue", "serve.max_queue", "waiting examples; past it: 503 + Retry-After"),
    Flag("--rate-limit", "serve.rate_limit", "requests per second per key; past it: 429"),
    Flag("--shutdown-timeout", "serve.shutdown_timeout", "seconds SIGTERM waits for accepted "
         "requests"),
    Flag("--max-body-mb", "serve.max_body_mb", "largest request body"),
    Flag("--max-text-chars", "serve.max_text_chars", "longest text"),
    Flag("--max-batch-items", "serve.max_batch_items", "longest /v1/classify/batch list"),
    Flag("--max-image-pixels", "serve.max_image_pixels", "most pixels of one image"),
    Flag("--max-connections", "serve.max_connections", "open connections; past it: 503"),
    Flag("--forwarded-allow-ips", "serve.forwarded_allow_ips", "proxies whose "
         "X-Forwarded-For names the client (unset: the header is ignored)"),
    Flag("--max-batch-size", "serve.max_batch_size", "most examples in one model call"),
    Flag("--max-wait-ms", "serve.max_wait_ms", "how long the queue waits to fill a batch"),
    Flag("--log-level", "serve.log_level", "critical | error | warning | info | debug"),
]

PROMPT_FLAGS = [
    *[flag for flag in CLASSIFIER_FLAGS if flag.key not in ("model.dtype", "model.device")],
    Flag("--text", "prompt.text", "the text of the example"),
    Flag("--image", "prompt.image", "its image (else a blank square stands in)"),
    Flag("--answer", "prompt.answer", "an answer, e.g. 'positive, neutral, positive': "
         "shows the tokens training puts the loss on"),
    Flag("--ids", "prompt.ids", "also print the token ids (the image's run as id × count)"),
]

ROBUSTNESS_FLAGS = [
    *evaluation_flags("robustness"),
    Flag("--variants", "robustness.variants", "prompt variants YAML (default: the shipped set)"),
    Flag("--allow-overlap", "robustness.allow_overlap",
         "report a run on records it trained on (refused otherwise)"),
]
SWEEP_FLAGS = [
    *(flag for flag in TRAIN_FLAGS if flag.key != "train.output"),  # each trial has its own
    Flag("--output", "sweep.output", "output folder (study.db, trials/, best.yaml)"),
    *folder_flags("sweep", resume=True),
    Flag("--trials", "sweep.trials", "finished trials the study should hold in all"),
    Flag("--storage", "sweep.storage", "Optuna storage URL shared by several machines"),
    Flag("--space", "sweep.space", "search-space YAML (default: the shipped one)"),
    Flag("--metric", "sweep.metric", "validation multimodal accuracy | weighted_f1 | macro_f1"),
]

EXPLAIN_FLAGS = [
    *CLASSIFIER_FLAGS,
    Flag("--image", "explain.image", "one image ..."),
    Flag("--text", "explain.text", "... and its text"),
    Flag("--input", "explain.input", "or a JSONL / CSV / Parquet file or exported split"),
    Flag("--output", "explain.output", "folder for explanations.jsonl and heatmaps/"),
    *folder_flags("explain"),
    Flag("--grid", "explain.grid", "occlusion grid cells per side (grid x grid variants)"),
    Flag("--batch-size", "explain.batch_size", "occluded variants per model call"),
]

RUN = Flag("RUN", "model.adapter", "a training run folder", required=True)
EXPERIMENT_FLAGS = [Flag("--output", "experiment.output", "output folder"),
                    *folder_flags("experiment")]

CHECK_PATH = Flag("PATH", "check.path", "MVSA release folder or own-data JSONL / CSV",
                  required=True)
JSON_FLAG = "one JSON object instead of text"
CHECK_FLAGS = [Flag("--json", "check.json", JSON_FLAG)]
SPLIT_PATH = Flag("PATH", "data.path", "MVSA release folder or own-data JSONL / CSV",
                  required=True)
SPLIT_EXPORT_FLAGS = [
    Flag("--procedure", "data.procedure", "cheema10 | random811 | clmlf | qmf | none (own "
         "data as one part named all)", required=True),
    Flag("--fold", "data.fold", "cheema10 fold, 1..10"),
    Flag("--split-seed", "data.split_seed", "random811 shuffle seed", old="--seed"),
    Flag("--splits", "data.splits_dir", "read the original published split files from DIR "
         "(unset: the id lists shipped in llavac/data/splitfiles)"),
    Flag("--output", "split.output", "output folder", required=True, old="--out"),
    Flag("--strict", "data.strict", "a bad record is fatal instead of skipped and counted"),
]
COMPARE_EVALS = [Flag("EVAL_A", "compare.eval_a", "an evaluate output folder", required=True),
                 Flag("EVAL_B", "compare.eval_b", "another, same test ids", required=True)]
COMPARE_FLAGS = [Flag("--json", "compare.json", JSON_FLAG)]
REPORT_FOLDER = Flag("FOLDER", "report.folder", "an evaluate output folder, or a demo / "
                     "experiment folder", required=True)
EXPORT_RUN = Flag("RUN", "export.run", "a training run folder", required=True)
EXPORT_FLAGS = [Flag("--output", "export.output", "the folder to write", required=True),
                Flag("--overwrite", "export.overwrite", "replace an earlier export there")]
DEMO_FLAGS = [
    Flag("--output", "demo.output", "output folder"),
    Flag("--data", "demo.data", "a real release folder instead of the synthetic one"),
    Flag("--model", "demo.model", "base model"),
    Flag("--procedure", "demo.procedure", "cheema10 | random811 | clmlf | qmf | none"),
    *folder_flags("demo"),
]

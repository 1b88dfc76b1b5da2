"""Training arguments: three `HfArgumentParser` dataclasses, a YAML ``--config``, and flags that override it.

Precedence: dataclass defaults < the YAML file < flags given on the command line. YAML
keys are the field names (``lr``, ``per_device_batch_size``, ...); ``model_config`` may be
a mapping (the `LaCLIPConfig` keyword arguments of a model trained from scratch).
"""

from dataclasses import dataclass, field, fields
import argparse
import json

import yaml
from transformers import HfArgumentParser

from ..processing.text import STRATEGIES as PARTIAL_CAPTIONS

METHOD_NAMES = ("clip", "laclip", "laclip-mt", "clips", "pcclip")


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class ModelArguments:
    method: str = _help(f"Training method: one of {', '.join(METHOD_NAMES)}.", default="laclip")
    model_name_or_path: str | None = _help(
        "Checkpoint folder or Hub id to start from (LaCLIP or plain CLIP); its tokenizer and processor are used.",
        default=None,
    )
    model_config: str | None = _help(
        "JSON (or, in the YAML file, a mapping) of LaCLIPConfig arguments for a model trained from scratch.",
        default=None,
    )
    tokenizer_name_or_path: str | None = _help(
        "Fast tokenizer folder or Hub id (default: the one saved with --model-name-or-path).", default=None
    )
    num_texts: int | None = _help(
        "LaCLIP-MT: texts per image, 1 + number of rewrites (default: from the first row).", default=None
    )
    max_length: int | None = _help("Token budget per text (default: the text tower's context length).", default=None)
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass to save memory.", default=False)
    torch_compile: bool = _help("Compile the model with torch.compile.", default=False)
    torch_compile_backend: str = _help("torch.compile backend (inductor, aot_eager, eager, ...).", default="inductor")
    lora_r: int = _help(
        "LoRA rank for finetuning a pretrained CLIP through peft; 0 trains all weights (pcclip: the text layers).",
        default=0,
    )
    lora_alpha: int = _help("LoRA scaling alpha.", default=16)
    lora_dropout: float = _help("LoRA dropout.", default=0.0)
    lora_target_modules: list[str] = _help(
        "Module names (or one regex) that get LoRA adapters.", default_factory=lambda: ["q_proj", "v_proj"]
    )

    def __post_init__(self):
        if self.method not in METHOD_NAMES:
            raise ValueError(f"--method must be one of {METHOD_NAMES}, got {self.method!r}")


@dataclass
class DataArguments:
    train_data: str | None = _help(
        "Training data: Hub id, dataset folder, imagefolder with metadata.jsonl, LaCLIP .csv, or .tar shards.",
        default=None,
    )
    split: str = _help("Dataset split to train on.", default="train")
    image_column: str = _help("Column holding the images.", default="image")
    caption_column: str = _help("Column holding the original captions.", default="caption")
    rewrites_column: str = _help("Column holding the list of rewrites.", default="rewrites")
    augmented_files: list[str] | None = _help(
        "LaCLIP CSV input: one augmented-text file per rewrite source, one line per CSV row.", default=None
    )
    image_root: str | None = _help("Folder the CSV's relative image paths start from (default: the CSV's).", default=None)
    streaming: bool = _help("Stream a Hub dataset instead of downloading it (needs --max-steps).", default=False)
    skip_bad_samples: bool = _help(
        "Skip unreadable or corrupt images and report how many; without it the first one stops the run.", default=False
    )
    num_workers: int | None = _help(
        "DataLoader worker processes that decode and augment (default: CPU cores per local process minus one, at "
        "most 8); 0 loads in the training process.",
        default=None,
    )
    difference_data: str | None = _help(
        "pcclip: rows (id_a, id_b, difference) joined by id to --train-data's images (`langclip differences` output, "
        "JSON(L), CSV, Parquet or Hub id).",
        default=None,
    )
    precompute_image_embeddings: bool = _help(
        "pcclip: embed every paired image once with the frozen image tower instead of in every batch.", default=False
    )
    synthetic_caption_column: str = _help("CLIPS: column holding the long synthetic captions.",
                                          default="synthetic_caption")
    partial_caption: str = _help(
        "CLIPS: what the text encoder sees of the synthetic caption: subcaption, block, random, truncate (K tokens) "
        "or none (the whole caption).", default="subcaption")
    partial_tokens: int = _help("CLIPS: the budget K of the partial caption, in tokens with the special tokens.",
                                default=32)

    def __post_init__(self):
        if self.partial_caption not in PARTIAL_CAPTIONS:
            raise ValueError(f"--partial-caption must be one of {PARTIAL_CAPTIONS}, got {self.partial_caption!r}")
        if self.partial_tokens <= 0:
            raise ValueError(f"--partial-tokens (K) must be a positive number of tokens, got {self.partial_tokens}")


@dataclass
class TrainArguments:
    output_dir: str = _help("Where checkpoints, logs and the final model go.", default="outputs/run")
    seed: int = _help("Seed of initialisation, data order, crops and aug_T draws.", default=0)
    per_device_batch_size: int = _help("Micro-batch size per process.", default=32)
    accum_freq: int = _help(
        "Micro-batches per step; the contrastive batch is all of them (features cached and recomputed).", default=1
    )
    num_epochs: float = _help("Epochs to train (ignored when --max-steps is set).", default=1.0)
    max_steps: int | None = _help("Optimizer steps to train; overrides --num-epochs.", default=None)
    lr: float = _help("Peak learning rate.", default=5e-4)
    lr_start: float = _help("Learning rate at the start of the linear warm-up.", default=1e-6)
    lr_end: float = _help("Learning rate at the end of the cosine decay.", default=1e-5)
    warmup_steps: int = _help("Linear warm-up steps (added to --warmup-epochs).", default=0)
    warmup_epochs: float = _help("Linear warm-up, in epochs.", default=0.0)
    weight_decay: float = _help("AdamW weight decay (not on biases, norms and 0/1-d parameters).", default=0.2)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.98)
    adam_eps: float = _help("AdamW epsilon.", default=1e-8)
    clip_loss_weight: float = _help(
        "pcclip: weight of the standard CLIP loss on the a images and their captions, added to the difference loss.",
        default=0.0,
    )
    max_grad_norm: float | None = _help("Clip the gradient norm to this value (default: no clipping).", default=None)
    mixed_precision: str = _help("Mixed precision: no, bf16 or fp16.", default="no")
    max_bad_steps: int = _help(
        "Abort once this many steps had a non-finite loss or gradient (such steps never change the weights). The "
        "count is read at logging and checkpoint steps, so a run stops up to --logging-steps - 1 steps late; its log "
        "ends before the step that reached the limit.",
        default=10,
    )
    fused_optimizer: bool = _help(
        "Fused AdamW where torch has it for the device (one kernel per step; non-finite steps are skipped on the "
        "device). --no-fused-optimizer: torch's default AdamW, whose guard reads one flag per step (a host sync).",
        default=True,
    )
    save_steps: int = _help("Save the training state every this many steps (0: only at the end).", default=500)
    save_total_limit: int = _help("Checkpoints to keep; older ones are deleted.", default=2)
    resume: bool = _help("Continue from the latest checkpoint in --output-dir.", default=False)
    logging_steps: int = _help(
        "Every this many steps, read the losses from the device (the step loop's only host sync), append them to "
        "train_log.jsonl and send metrics to the trackers; the gradient norm is computed at these steps (and every "
        "step with --max-grad-norm).",
        default=10,
    )
    report_to: str = _help("Tracker for accelerate: tensorboard, wandb, ..., or none.", default="tensorboard")
    push_to_hub: bool = _help("Upload the final model folder to the Hub (honours HF_ENDPOINT, HF_TOKEN).", default=False)
    hub_model_id: str | None = _help("Hub repository id for --push-to-hub.", default=None)

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"--mixed-precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.per_device_batch_size < 1 or self.accum_freq < 1:
            raise ValueError("--per-device-batch-size and --accum-freq must be >= 1")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push-to-hub needs --hub-model-id")


DATACLASSES = (ModelArguments, DataArguments, TrainArguments)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every training flag to ``parser`` (also the `langclip train` sub-command); unset flags stay out of the namespace."""
    parser.add_argument("--config", help="YAML file of arguments; flags given here override it.")
    parser._add_container_actions(HfArgumentParser(DATACLASSES, add_help=False))
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS


def load_yaml_config(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}")
    if isinstance(values.get("model_config"), dict):
        values["model_config"] = json.dumps(values["model_config"])
    known = {f.name: f for dtype in DATACLASSES for f in fields(dtype)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{path}: unknown argument {key!r}")
        if known[key].type in (float, float | None) and isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                values[key] = float(value)
            except ValueError:
                raise ValueError(f"{path}: {key} must be a number, got {value!r}") from None
    return values


def arguments_from_dict(values: dict):
    """(ModelArguments, DataArguments, TrainArguments) from a flat mapping of argument names to values."""
    known = {f.name for dtype in DATACLASSES for f in fields(dtype)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training arguments: {', '.join(unknown)}")
    return tuple(dtype(**{f.name: values[f.name] for f in fields(dtype) if f.name in values}) for dtype in DATACLASSES)


def arguments_from_namespace(namespace: argparse.Namespace):
    """(ModelArguments, DataArguments, TrainArguments) from explicitly given flags over the ``config`` YAML."""
    explicit = dict(vars(namespace))
    config = explicit.pop("config", None)
    explicit.pop("command", None)
    return arguments_from_dict({**(load_yaml_config(config) if config else {}), **explicit})


def parse_train_args(argv: list[str] | None = None):
    """Parse ``argv`` (default: sys.argv) into (ModelArguments, DataArguments, TrainArguments)."""
    parser = argparse.ArgumentParser(description="Train CLIP / LaCLIP / LaCLIP-MT with accelerate.")
    add_arguments(parser)
    return arguments_from_namespace(parser.parse_args(argv))

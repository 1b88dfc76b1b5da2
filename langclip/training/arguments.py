"""Training arguments: three dataclasses, a YAML ``--config``, and flags that override it (`add_field_flags`).

Precedence: dataclass defaults < the YAML file < flags given on the command line. YAML
keys are the field names (``lr``, ``per_device_batch_size``, ...); ``model_config`` may be
a mapping (the `LaCLIPConfig` keyword arguments of a model trained from scratch).

One validation layer (`check_values`, the dataclasses' ``__post_init__``, `check_model_config`)
runs before any model is built: YAML values must have the field's type (the string
``"false"`` is not a boolean), unknown keys are named with the nearest valid one, and every
error is a `ConfigError` naming the key and the fix.
"""

from dataclasses import dataclass, field, fields
import argparse
import difflib
import json
import os

import yaml

from ..choices import CONTRASTIVE_LOSSES, OBJECTIVE_NAMES, TEXT_SAMPLINGS, TRAIN_PARTS
from ..errors import ConfigError, check_at_least_one
from ..hub_cards.methods import METHODS
from ..processing.text import STRATEGIES as PARTIAL_CAPTIONS

METHOD_NAMES = tuple(METHODS)


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class ModelArguments:
    method: str = _help(
        f"Training method preset: one of {', '.join(METHOD_NAMES)}; --text-sampling, --objective, --contrastive-loss "
        "and --train-parts change its options.", default="laclip")
    text_sampling: str | None = _help(
        "Text of each image: caption (the web caption) or rewrites (aug_T: uniform among the caption and its "
        "rewrites). Default: the preset's.", default=None)
    objective: str | None = _help(
        f"Loss: one of {', '.join(OBJECTIVE_NAMES)} (clip: one text per image; multi-positive: all texts of an image, "
        "LaCLIP-MT; clips: dual contrastive + captioner; difference: PC-CLIP). Default: the preset's.", default=None)
    contrastive_loss: str = _help(
        "Form of the clip, multi-positive and clips objectives: softmax (CLIP) or sigmoid (SigLIP, learnable "
        "t = exp(logit_scale) from 10 and bias b from -10, stored in the checkpoint).", default="softmax")
    train_parts: str | None = _help(
        "Parameters that train: all, text (the text transformer blocks) or lora (peft adapters of --lora-r). "
        "Default: the preset's (pcclip: text), lora when --lora-r > 0.", default=None)
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
        "LaCLIP-MT: texts per image, 1 + number of rewrites (default: 1 + the most rewrites of a row; of the "
        "first row for streamed data); rows with fewer are padded with their caption.", default=None
    )
    max_length: int | None = _help("Token budget per text (default: the text tower's context length).", default=None)
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass to save memory.", default=False)
    torch_compile: bool = _help("Compile the model with torch.compile.", default=False)
    torch_compile_backend: str = _help("torch.compile backend (inductor, aot_eager, eager, ...).", default="inductor")
    lora_r: int = _help(
        "LoRA rank for finetuning a pretrained CLIP through peft (--train-parts lora); 0: no LoRA.",
        default=0,
    )
    lora_alpha: int = _help("LoRA scaling alpha.", default=16)
    lora_dropout: float = _help("LoRA dropout.", default=0.0)
    lora_target_modules: list[str] = _help(
        "Module names (or one regex) that get LoRA adapters.", default_factory=lambda: ["q_proj", "v_proj"]
    )
    # Speed levers (issue 28): patch dropout and locked towers, OpenCLIP's --patch-dropout / --lock-image / --lock-text.
    patch_dropout: float = _help(
        "Fraction of each image's patch tokens dropped at random in training (FLIP; OpenCLIP's patch dropout), in "
        "[0, 1): the class token is kept, evaluation sees every patch; saved in config.json. 0: off.", default=0.0)
    lock_image: bool = _help(
        "Freeze the image tower (patch and position embeddings, blocks, LayerNorms, visual_projection); a frozen "
        "tower keeps no activations for the backward pass.", default=False)
    lock_image_unlocked_groups: int = _help(
        "With --lock-image: leave the last N layer groups trainable. The groups, first to last: embeddings with the "
        "pre-LayerNorm, each block but the last, the last block with post_layernorm, visual_projection (OpenCLIP's).",
        default=0)
    lock_text: bool = _help(
        "Freeze the text tower (token and position embeddings, blocks, final LayerNorm, text_projection).",
        default=False)
    lock_text_unlocked_layers: int = _help(
        "With --lock-text: leave the last N layer groups trainable. The groups, first to last: embeddings, each "
        "block but the last, the last block with final_layer_norm, text_projection.", default=0)
    locked_norms_trainable: bool = _help(
        "Keep the LayerNorms (weights and biases, QK-norms included) inside locked groups trainable (OpenCLIP's "
        "text tower default; --lock-text-freeze-layer-norm there freezes them). Default: locked means frozen.",
        default=False)

    def __post_init__(self):
        if self.method not in METHOD_NAMES:
            raise ConfigError(f"--method must be one of {', '.join(METHOD_NAMES)}, got {self.method!r}"
                              f"{nearest(self.method, METHOD_NAMES)}")
        check_at_least_one(self, "num_texts")  # 0 would read as "unset"
        if self.model_config is not None:
            try:
                parsed = json.loads(self.model_config)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--model-config is not valid JSON ({error}): {self.model_config!r}; "
                                  """write an object such as '{"projection_dim": 512}'""") from None
            if not isinstance(parsed, dict):
                raise ConfigError(f"--model-config must be a JSON object of config arguments, got {self.model_config!r}")
        for flag, value, choices in (("--text-sampling", self.text_sampling, (None, *TEXT_SAMPLINGS)),
                                     ("--objective", self.objective, (None, *OBJECTIVE_NAMES)),
                                     ("--contrastive-loss", self.contrastive_loss, CONTRASTIVE_LOSSES),
                                     ("--train-parts", self.train_parts, (None, *TRAIN_PARTS))):
            if value not in choices:
                raise ConfigError(f"{flag} must be one of {tuple(c for c in choices if c)}, got {value!r}")


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
    streaming: bool = _help("Stream a Hub dataset or a local data folder instead of loading it whole (needs --max-steps; "
                            "a save_to_disk folder, CSV or shards are read as they are); read in passes "
                            "block-shuffled by --shuffle-buffer, and resumed to the exact sample.", default=False)
    skip_bad_samples: bool = _help(
        "Skip unreadable or corrupt images and report how many; without it the first one stops the run.", default=False
    )
    num_workers: int | None = _help(
        "DataLoader worker processes that decode and augment (default: CPU cores per local process minus one, at "
        "most 8); 0 loads in the training process.",
        default=None,
    )
    shuffle_buffer: int = _help(
        "Shards and --streaming: samples are shuffled in consecutive blocks of this many (undecoded) samples "
        "(for shards after a per-pass shuffle of the shard order); 0 or 1 keeps the order.", default=1000)
    train_num_samples: int | None = _help(
        "Shards: samples in one epoch (OpenCLIP's --train-num-samples); epochs then have "
        "train_num_samples // global batch steps. Without it, streamed data needs --max-steps.", default=None)
    dataset_resampled: bool = _help(
        "Shards: draw the shards of each pass with replacement (OpenCLIP's --dataset-resampled) instead of "
        "a permutation.", default=False)
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
            raise ConfigError(f"--partial-caption must be one of {PARTIAL_CAPTIONS}, got {self.partial_caption!r}")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"--shuffle-buffer must be >= 0, got {self.shuffle_buffer}")
        if self.train_num_samples is not None and self.train_num_samples <= 0:
            raise ConfigError(f"--train-num-samples must be a positive number of samples, got {self.train_num_samples}")
        if self.partial_tokens <= 0:
            raise ConfigError(f"--partial-tokens (K) must be a positive number of tokens, got {self.partial_tokens}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers must be >= 0, got {self.num_workers}")


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
    lr_decay_per_epoch: float | None = _help(
        "Exponential decay instead of the cosine: after warm-up the learning rate is multiplied by this once per "
        "epoch (PC-CLIP's official schedule: 0.9); needs epochs (map-style data, or shards with "
        "--train-num-samples).", default=None)
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
    resume: bool = _help("Continue from the latest complete checkpoint in --output-dir (a corrupted one is passed "
                         "over, and said so); the batch size, seed, data and method must match the run's.", default=False)
    resume_ignore_mismatch: bool = _help(
        "With --resume: continue even if the batch size, seed, data or method differ from the run's (a warning "
        "names each).", default=False)
    overwrite_output_dir: bool = _help(
        "Start a fresh run in an --output-dir that holds another run: its checkpoints, log and state are deleted "
        "first. Without it (or --resume) such a folder is refused.", default=False)
    logging_steps: int = _help(
        "Every this many steps, read the losses from the device (the step loop's only host sync), append them to "
        "train_log.jsonl and send metrics to the trackers; the gradient norm is computed at these steps (and every "
        "step with --max-grad-norm).",
        default=10,
    )
    report_to: str = _help("Tracker for accelerate: tensorboard, wandb, ..., or none.", default="tensorboard")
    eval_suite: str | None = _help(
        "Evaluation suite (a shipped one such as quick, or a manifest file) run on the main process every "
        "--eval-steps and at the end; scores go to the trackers, the final results into the model card.",
        default=None,
    )
    eval_steps: int = _help("Run --eval-suite every this many steps (0: only at the end).", default=0)
    push_to_hub: bool = _help("Upload the final model folder to the Hub (honours HF_ENDPOINT, HF_TOKEN).", default=False)
    hub_model_id: str | None = _help("Hub repository id for --push-to-hub.", default=None)
    private: bool = _help("With --push-to-hub: create the Hub repo as private.", default=False)
    revision: str | None = _help("With --push-to-hub: branch to push to (created from main if missing).", default=None)

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"--mixed-precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        check_at_least_one(self, "per_device_batch_size", "accum_freq", "logging_steps")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"--max-steps must be a positive number of steps, got {self.max_steps}; "
                              "leave it out to train --num-epochs")
        if self.max_steps is None and not self.num_epochs > 0:
            raise ConfigError(f"--num-epochs must be > 0, got {self.num_epochs}")
        for name in ("save_steps", "save_total_limit", "warmup_steps", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "max_grad_norm"):  # a negative clip norm would flip the gradients
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.lr_decay_per_epoch is not None and not 0 < self.lr_decay_per_epoch <= 1:
            raise ConfigError(f"--lr-decay-per-epoch must be in (0, 1], got {self.lr_decay_per_epoch}")
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ConfigError(f"--output-dir {self.output_dir} is a file, not a folder; choose another --output-dir")
        if self.resume and self.overwrite_output_dir:
            raise ConfigError("--resume continues the run in --output-dir and --overwrite-output-dir deletes it; "
                              "give one of them")
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("--push-to-hub needs --hub-model-id")
        if self.eval_steps < 0:
            raise ConfigError(f"--eval-steps must be >= 0, got {self.eval_steps}")
        if self.eval_suite:  # a bad manifest fails before training, not at the first evaluation
            from ..evaluation.suite import load_suite

            load_suite(self.eval_suite)


DATACLASSES = (ModelArguments, DataArguments, TrainArguments)


def truthy(value: str) -> bool:
    """A boolean flag's optional value: yes/no, true/false, t/f, y/n or 1/0, in any case."""
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (yes/no, true/false, t/f, y/n or 1/0), got {value!r}")


def add_field_flags(parser: argparse.ArgumentParser, dtype) -> None:
    """The flags of ``dtype``'s fields, as `transformers.HfArgumentParser` spells them, without importing
    transformers: ``--name`` and ``--name-with-dashes``; ``X | None`` takes an X; lists take one or more values;
    booleans take an optional value (`truthy`), and those that default to true also ``--no-name``."""
    for f in fields(dtype):
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        optional = getattr(f.type, "__args__", ())
        kind = optional[0] if type(None) in optional else f.type
        if kind is bool:
            parser.add_argument(*names, type=truthy, nargs="?", const=True, help=f.metadata["help"])
            if f.default is True:
                parser.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", action="store_false",
                                    dest=f.name, help=f.metadata["help"])
        elif getattr(kind, "__origin__", None) is list:
            parser.add_argument(*names, type=kind.__args__[0], nargs="+", help=f.metadata["help"])
        else:
            parser.add_argument(*names, type=kind, help=f.metadata["help"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every training flag to ``parser`` (also the `langclip train` sub-command); unset flags stay out of the namespace."""
    parser.add_argument("--config", help="YAML file of arguments; flags given here override it.")
    for dtype in DATACLASSES:
        add_field_flags(parser, dtype)
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS


FIELDS = {f.name: f.type for dtype in DATACLASSES for f in fields(dtype)}


def nearest(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` by `difflib`, else ``''``."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""


def check_values(values: dict, where: str) -> dict:
    """``values`` with each checked against its field's type; numbers for float fields become floats.

    bool fields take only true/false (never a string), int fields only integers, float fields
    numbers or numeric strings (YAML reads ``1e-3`` as a string), str fields strings, list
    fields lists of strings; ``None`` only where the field is optional. Raises `ConfigError`
    naming ``where``, the key and the expected type; an unknown key is named with the nearest valid one.
    """
    checked = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise ConfigError(f"{where}: unknown argument {key!r}{nearest(key, FIELDS)}; "
                              "`langclip train --help` lists the arguments (YAML keys use underscores)")
        kind = FIELDS[key]
        optional = kind in (str | None, int | None, float | None, list[str] | None)
        base = {str | None: str, int | None: int, float | None: float, list[str] | None: list[str]}.get(kind, kind)
        if value is None and optional:
            checked[key] = None
            continue
        if base is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok = {bool: isinstance(value, bool),
              int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              str: isinstance(value, str),
              list[str]: isinstance(value, list) and all(isinstance(v, str) for v in value)}[base]
        if not ok:
            expected = {bool: "true or false (a YAML boolean, without quotes)", int: "an integer", float: "a number",
                        str: "a string", list[str]: "a list of strings"}[base]
            raise ConfigError(f"{where}: {key} must be {expected}{' or null' if optional else ''}, "
                              f"got {value!r} ({type(value).__name__})")
        checked[key] = float(value) if base is float else value
    return checked


def load_yaml_config(path: str) -> dict:
    """The checked arguments of a YAML file (see `check_values`); ``model_config`` may be a mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"--config {path} is not a readable UTF-8 YAML file: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}")
    if isinstance(values.get("model_config"), dict):
        values["model_config"] = json.dumps(values["model_config"])
    return check_values(values, path)


def arguments_from_dict(values: dict, where: str = "training arguments"):
    """(ModelArguments, DataArguments, TrainArguments) from a flat mapping of argument names to values."""
    values = check_values(values, where)
    return tuple(dtype(**{f.name: values[f.name] for f in fields(dtype) if f.name in values}) for dtype in DATACLASSES)


def check_model_config(model_config: str | None, config_class) -> None:
    """Every key of the ``--model-config`` JSON (and of its ``text_config`` / ``vision_config``) must be an
    argument of ``config_class`` (or of its sub-config); a `ConfigError` names the key and the nearest valid one."""
    if model_config is None:
        return
    values = json.loads(model_config)
    scopes = [("", values, config_class)]
    scopes += [(f"{name}.", values[name], sub) for name, sub in config_class.sub_configs.items()
               if isinstance(values.get(name), dict)]
    for prefix, mapping, cls in scopes:
        valid = set(cls().to_dict()) | set(cls.sub_configs)
        for key in mapping:
            if key not in valid:
                raise ConfigError(f"--model-config: unknown key {prefix + key!r} for {cls.__name__}"
                                  f"{nearest(key, valid)}")


def arguments_from_namespace(namespace: argparse.Namespace):
    """(ModelArguments, DataArguments, TrainArguments) from explicitly given flags over the ``config`` YAML."""
    explicit = dict(vars(namespace))
    config = explicit.pop("config", None)
    explicit.pop("command", None)
    return arguments_from_dict({**(load_yaml_config(config) if config else {}), **explicit},
                               where=f"--config {config} and flags" if config else "flags")

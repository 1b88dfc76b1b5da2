"""The model a run trains, with its tokenizer and image processor: loaded from ``--model-name-or-path`` or built from
``--model-config``, in the method's model class, with gradient checkpointing, LoRA or frozen parts as asked.

It lives in training/, not modeling/, because it reads the training flags (`ModelArguments`) and the `Method`.
"""

from __future__ import annotations

import contextlib
import json

from huggingface_hub.errors import StrictDataclassError
from transformers import AutoTokenizer, CLIPImageProcessorPil, PreTrainedTokenizerFast

from ..errors import ConfigError, LangclipError
from ..modeling import LaCLIPModel, image_processing
from ..modeling.auto import check_tokenizer_fits, from_user_path
from .arguments import ModelArguments
from .methods import Method


def tokenizer_flag(model_args: ModelArguments) -> str:
    """The flag that names the run's tokenizer."""
    return "--tokenizer-name-or-path" if model_args.tokenizer_name_or_path else "--model-name-or-path"


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerFast:
    """The fast tokenizer of ``--tokenizer-name-or-path`` or of the checkpoint (converted CLIPS included)."""
    path = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if path is None:
        raise ConfigError("give --model-name-or-path or --tokenizer-name-or-path: training needs a tokenizer")
    tokenizer = from_user_path(AutoTokenizer.from_pretrained, path, tokenizer_flag(model_args))
    if not tokenizer.is_fast:
        raise ConfigError(f"the tokenizer at {path} is not a fast tokenizer; give a tokenizer.json-backed one")
    return tokenizer


def load_image_processor(model_args: ModelArguments, image_size: int) -> CLIPImageProcessorPil:
    """The checkpoint's image processor, or CLIP's (`default_image_processor`) at the model's ``image_size``."""
    if model_args.model_name_or_path:
        try:
            return image_processing.load_image_processor(model_args.model_name_or_path)
        except OSError:
            pass
    return image_processing.default_image_processor(image_size)


def build_model(model_args: ModelArguments, method: Method, tokenizer) -> LaCLIPModel:
    """From ``--model-name-or-path``, or from ``--model-config`` sizes with the tokenizer's vocabulary and ids;
    the method's model class, with its config overrides (e.g. the sigmoid loss and its bias) and ``--patch-dropout``
    (the run's rate, also over a checkpoint's)."""
    path = model_args.model_name_or_path
    overrides = {**method.objective.config_overrides, "patch_dropout": model_args.patch_dropout}
    if path:
        model_class = from_user_path(method.objective.model_class, path, "--model-name-or-path")
        return from_user_path(model_class.from_pretrained, path, "--model-name-or-path", **overrides)
    if not model_args.model_config:
        raise ConfigError("give --model-name-or-path or --model-config to build the model")
    model_class = method.objective.model_class()
    kwargs = json.loads(model_args.model_config)
    text = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            **kwargs.pop("text_config", {})}
    config_class = model_class.config_class
    for name, sub_config in config_class.sub_configs.items():  # each tower alone first, so the error names its key
        values = text if name == "text_config" else kwargs.get(name)
        if isinstance(values, dict):
            with model_config_errors(f"{name}: "):
                sub_config(**values)
    with model_config_errors():
        return model_class(config_class(text_config=text, **{**kwargs, **overrides}))


@contextlib.contextmanager
def model_config_errors(scope: str = ""):
    """What a config class or the model's constructor raises on a --model-config value (transformers' strict
    config validation, a size the layers cannot take) as a `ConfigError` naming the key."""
    try:
        yield
    except LangclipError:
        raise
    except (StrictDataclassError, ValueError, TypeError, KeyError, ArithmeticError, RuntimeError) as error:
        raise ConfigError(f"--model-config (YAML key model_config): {scope}{type(error).__name__}: "
                          f"{' '.join(str(error).split()).rstrip('.')}; fix the value it names") from error


def add_lora(model, model_args: ModelArguments, targets: str | None = None):
    """``model`` with PEFT LoRA adapters of rank ``--lora-r`` on ``targets`` (a regex; default: the
    ``--lora-target-modules`` names); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = [targets] if targets else model_args.lora_target_modules
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=targets[0] if len(targets) == 1 else targets)
    return get_peft_model(model, config)


def build_trainable_model(model_args: ModelArguments,
                          method: Method) -> tuple[LaCLIPModel, PreTrainedTokenizerFast, CLIPImageProcessorPil]:
    """(model, tokenizer, image processor) of the run: `build_model`, with activation checkpointing under
    ``--gradient-checkpointing``, and LoRA adapters (``--train-parts lora``) or the method's frozen parts."""
    tokenizer = load_tokenizer(model_args)
    model = build_model(model_args, method, tokenizer)
    check_tokenizer_fits(tokenizer, model.config.text_config, tokenizer_flag(model_args))
    context = model.config.text_config.max_position_embeddings
    if model_args.max_length is not None and model_args.max_length > context:
        raise ConfigError(f"--max-length {model_args.max_length} is longer than the text tower's context of "
                          f"{context} tokens (max_position_embeddings); give at most {context}, or leave it out")
    processor = load_image_processor(model_args, model.config.vision_config.image_size)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if method.train_parts == "lora":
        model = add_lora(model, model_args, method.objective.lora_targets)
    else:
        method.freeze(model)
    return model, tokenizer, processor

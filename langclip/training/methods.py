"""Training methods as three orthogonal options: text sampling, objective, parts trained.

- **text sampling** (``--text-sampling``): ``caption`` (the web caption) or ``rewrites``
  (aug_T: a uniform draw among the caption and its LLM rewrites);
- **objective** (``--objective``, a `langclip.training.objectives.Objective`): ``clip``, ``multi-positive``
  (LaCLIP-MT), ``clips`` or ``difference`` (PC-CLIP), the contrastive ones in ``--contrastive-loss`` softmax or
  sigmoid;
- **parts trained** (``--train-parts``): ``all``, ``text`` (the text transformer blocks)
  or ``lora`` (peft adapters, ``--lora-r``).

The five ``--method`` names are `PRESETS` of these; flags change any option of a preset.
A `Method` names the columns it needs (`check_columns`, before the first step), prepares
its rows and collator (`prepare_data`: the objective's, with the text sampling's `RowOptions`) and freezes what
does not train (`freeze`); the step uses ``method.objective`` for the features and the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, DataError
from ..processing.text import TextAugmenter
from .objectives import OBJECTIVES, TEXT_SAMPLINGS, CLIPObjective, Objective, RowOptions

TRAIN_PARTS = ("all", "text", "lora")
PRESETS: dict[str, dict[str, str]] = {
    "clip": {"text_sampling": "caption", "objective": "clip", "train_parts": "all"},
    "laclip": {"text_sampling": "rewrites", "objective": "clip", "train_parts": "all"},
    "laclip-mt": {"text_sampling": "rewrites", "objective": "multi-positive", "train_parts": "all"},
    "clips": {"text_sampling": "caption", "objective": "clips", "train_parts": "all"},
    "pcclip": {"text_sampling": "caption", "objective": "difference", "train_parts": "text"},
}
"""The ``--method`` names: each a (text sampling, objective, parts trained) combination."""
TEXT_LAYERS = "text_model.encoder.layers."


def freeze_all_but_text_layers(model: torch.nn.Module) -> int:
    """Leave ``requires_grad`` on the text transformer blocks only; returns the trainable parameter count."""
    trainable = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(TEXT_LAYERS in name)
        trainable += parameter.numel() if parameter.requires_grad else 0
    if trainable == 0:
        raise ConfigError("the model has no text_model.encoder.layers parameters to train")
    return trainable


@dataclass(frozen=True)
class Method:
    """One training method: a text sampling, an `Objective` and the parts trained.

    ``Method.preset("laclip-mt", contrastive_loss="sigmoid")`` is a preset with options
    changed; `from_arguments` builds one from the run's flags.
    """

    objective: Objective = field(default_factory=CLIPObjective)
    text_sampling: str = "caption"
    train_parts: str = "all"
    seed: int = 0
    skip_bad_samples: bool = False

    def __post_init__(self):
        for flag, value, choices in (("--text-sampling", self.text_sampling, TEXT_SAMPLINGS),
                                     ("--train-parts", self.train_parts, TRAIN_PARTS)):
            if value not in choices:
                raise ConfigError(f"{flag} must be one of {choices}, got {value!r}")
        if self.text_sampling not in self.objective.text_samplings:
            raise ConfigError(f"--objective {self.objective.name} works with --text-sampling "
                              f"{' or '.join(self.objective.text_samplings)}, not {self.text_sampling}")

    @classmethod
    def preset(cls, name: str, **options) -> Method:
        """The ``--method`` preset ``name``, with ``options`` (fields of the method or of its objective) changed."""
        if name not in PRESETS:
            raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], **options}
        objective_class = OBJECTIVES[values.pop("objective")]
        own = {f.name for f in dataclasses.fields(cls)} - {"objective"}
        theirs = {f.name for f in dataclasses.fields(objective_class)}
        unknown = sorted(set(values) - own - theirs)
        if unknown:
            raise ConfigError(f"method {name!r} has no option(s) {', '.join(unknown)}; its objective "
                              f"{objective_class.name!r} takes {', '.join(sorted(theirs)) or 'none'}")
        objective = objective_class(**{k: v for k, v in values.items() if k in theirs})
        return cls(objective, **{k: v for k, v in values.items() if k in own})

    @classmethod
    def from_arguments(cls, model_args, data_args, train_args) -> Method:
        """The ``--method`` preset with ``--text-sampling``, ``--objective``, ``--contrastive-loss`` and
        ``--train-parts`` applied; ``--lora-r`` > 0 alone means ``--train-parts lora``."""
        preset = PRESETS[model_args.method]
        train_parts = model_args.train_parts or ("lora" if model_args.lora_r > 0 else preset["train_parts"])
        if (train_parts == "lora") != (model_args.lora_r > 0):
            raise ConfigError(f"--train-parts {train_parts} with --lora-r {model_args.lora_r}: LoRA needs --lora-r > 0, "
                              "and --lora-r > 0 needs --train-parts lora")
        objective_class = OBJECTIVES[model_args.objective or preset["objective"]]
        return cls(objective_class(**objective_class.options(model_args, data_args, train_args)),
                   text_sampling=model_args.text_sampling or preset["text_sampling"], train_parts=train_parts,
                   seed=train_args.seed, skip_bad_samples=data_args.skip_bad_samples)

    @property
    def description(self) -> str:
        """E.g. ``rewrites / multi-positive (sigmoid) / all``."""
        return f"{self.text_sampling} / {self.objective.description} / {self.train_parts}"

    @property
    def columns(self) -> tuple[str, ...]:
        """The record columns this method needs: the objective's, and ``rewrites`` (after ``caption``) for aug_T."""
        columns = self.objective.columns()
        if self.text_sampling == "rewrites":
            after = columns.index("caption") + 1
            columns = columns[:after] + ("rewrites",) + columns[after:]
        return columns

    def check_columns(self, columns, where: str) -> None:
        """Raise a DataError naming the method and every column it needs that ``where``'s data lacks."""
        missing = [column for column in self.columns if column not in columns]
        if missing:
            raise DataError(
                f"--objective {self.objective.name} with --text-sampling {self.text_sampling} needs the column(s) "
                f"{', '.join(map(repr, missing))}, which {where} does not have (columns: {', '.join(map(repr, columns))}); map yours with --image-column, --caption-column, "
                "--rewrites-column or --synthetic-caption-column"
                + ("; --clip-loss-weight needs the captions of the images"
                   if "caption" in missing and getattr(self.objective, "clip_weight", 0) else "")
            )

    @property
    def row_options(self) -> RowOptions:
        """What the collators take from the method: aug_T for ``rewrites`` sampling (None for ``caption``), the
        seed, skip-and-count."""
        augmenter = TextAugmenter(self.seed) if self.text_sampling == "rewrites" else None
        return RowOptions(augmenter, self.seed, self.skip_bad_samples)

    def freeze(self, model) -> None:
        """``text``: only the text transformer blocks keep ``requires_grad``; ``all``: every parameter trains.
        (``lora``: `peft` freezes the base model.)"""
        if self.train_parts == "text":
            freeze_all_but_text_layers(model)

    def prepare_data(self, model, dataset, tokenizer, max_length: int, processor, device):
        """(rows, collator) for the DataLoader: the objective's, with this method's `row_options`."""
        return self.objective.prepare_data(model, dataset, tokenizer, max_length, processor, device,
                                           self.row_options)

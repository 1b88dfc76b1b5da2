"""Training methods as three orthogonal options: text sampling, objective, parts trained.

- **text sampling** (``--text-sampling``): ``caption`` (the web caption) or ``rewrites``
  (aug_T: a uniform draw among the caption and its LLM rewrites);
- **objective** (``--objective``, a `langclip.training.objectives.Objective`): ``clip``, ``multi-positive``
  (LaCLIP-MT), ``clips`` or ``difference`` (PC-CLIP), the contrastive ones in ``--contrastive-loss`` softmax or
  sigmoid;
- **parts trained** (``--train-parts``): ``all``, ``text`` (the text transformer blocks)
  or ``lora`` (peft adapters, ``--lora-r``), narrowed further by OpenCLIP's locked towers (``--lock-image``,
  ``--lock-text``, their unlocked layer groups, `TowerLock`).

The five ``--method`` names are `PRESETS` of these; flags change any option of a preset.
A `Method` names the columns it needs (`check_columns`, before the first step), prepares
its rows and collator (`prepare_data`: the objective's, with the text sampling's `RowOptions`) and freezes what
does not train (`freeze`); the step uses ``method.objective`` for the features and the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from ..choices import TEXT_SAMPLINGS, TRAIN_PARTS
from ..errors import ConfigError, DataError
from ..flags import TRAIN_FLAGS, check_flags, given_fields
from ..processing.loading import input_kind
from ..processing.text import TextAugmenter
from .objectives import OBJECTIVES, CLIPObjective, Objective, RowOptions

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


def layer_groups(model: nn.Module, tower: str) -> list[list[nn.Module]]:
    """The layer groups of a tower of a `CLIPModel` (LaCLIP, CLIPS), first to last, as OpenCLIP's
    ``VisionTransformer.lock`` counts them: ``image``: [embeddings, pre_layrnorm], each block but the last,
    [last block, post_layernorm], [visual_projection]; ``text``: [embeddings], each block but the last,
    [last block, final_layer_norm], [text_projection]. A tower of L blocks has L + 2 groups."""
    if tower == "image":
        encoder, first, last, projection = (model.vision_model, [model.vision_model.embeddings,
                                            model.vision_model.pre_layrnorm], model.vision_model.post_layernorm,
                                            model.visual_projection)
    elif tower == "text":
        encoder, first, last, projection = (model.text_model, [model.text_model.embeddings],
                                            model.text_model.final_layer_norm, model.text_projection)
    else:
        raise ValueError(f"tower must be image or text, got {tower!r}")
    layers = list(encoder.encoder.layers)
    return [first, *([layer] for layer in layers[:-1]), [layers[-1], last], [projection]]


@dataclass(frozen=True)
class TowerLock:
    """OpenCLIP's locked towers: ``image`` / ``text`` freeze that tower but its last ``image_unlocked_groups`` /
    ``text_unlocked_groups`` layer groups (`layer_groups`); ``norms_trainable`` leaves the LayerNorms inside the
    locked groups as they were (trainable unless ``--train-parts`` froze them). A lock only ever freezes: it never
    makes trainable what ``--train-parts`` froze. Frozen parameters get no gradient, and a tower with no trainable
    parameter before some point records no autograd graph there, so it keeps no activations for the backward."""

    image: bool = False
    image_unlocked_groups: int = 0
    text: bool = False
    text_unlocked_groups: int = 0
    norms_trainable: bool = False

    def __post_init__(self):
        for flag, locked, unlocked in (("--lock-image-unlocked-groups", self.image, self.image_unlocked_groups),
                                       ("--lock-text-unlocked-layers", self.text, self.text_unlocked_groups)):
            if unlocked < 0:
                raise ConfigError(f"{flag} must be >= 0, got {unlocked}")
            if unlocked and not locked:
                raise ConfigError(f"{flag} {unlocked} needs {flag.rsplit('-unlocked', 1)[0]}")
        if self.norms_trainable and not (self.image or self.text):
            raise ConfigError("--locked-norms-trainable needs --lock-image or --lock-text")

    @property
    def active(self) -> bool:
        return self.image or self.text

    @property
    def description(self) -> str:
        parts = [f"{tower} locked" + (f" but its last {unlocked} groups" if unlocked else "")
                 for tower, locked, unlocked in (("image", self.image, self.image_unlocked_groups),
                                                 ("text", self.text, self.text_unlocked_groups)) if locked]
        return ", ".join(parts) + (" (norms trainable)" if self.norms_trainable else "")

    def apply(self, model: nn.Module) -> int:
        """Freeze the locked groups of ``model``; returns the number of parameters frozen."""
        frozen = 0
        for tower, locked, unlocked in (("image", self.image, self.image_unlocked_groups),
                                        ("text", self.text, self.text_unlocked_groups)):
            if not locked:
                continue
            groups = layer_groups(model, tower)
            if unlocked > len(groups):
                raise ConfigError(f"the {tower} tower has {len(groups)} layer groups (embeddings, "
                                  f"{len(groups) - 2} blocks, projection); cannot leave {unlocked} unlocked")
            for group in groups[:len(groups) - unlocked]:
                for module in group:
                    keep = set()
                    if self.norms_trainable:
                        keep = {id(p) for m in module.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
                    for parameter in module.parameters():
                        if id(parameter) not in keep and parameter.requires_grad:
                            parameter.requires_grad_(False)
                            frozen += parameter.numel()
        return frozen


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
    lock: TowerLock = field(default_factory=TowerLock)

    def __post_init__(self):
        if self.lock.active and self.train_parts == "lora":
            raise ConfigError("--lock-image / --lock-text do not apply to --train-parts lora (peft already freezes "
                              "every base weight); use --train-parts all or text")
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
        ``--train-parts`` applied; ``--lora-r`` > 0 alone means ``--train-parts lora``. Every given flag that does
        not apply to this method and input is refused or warned about first (`langclip.flags.TRAIN_FLAGS`)."""
        preset = PRESETS[model_args.method]
        train_parts = model_args.train_parts or ("lora" if model_args.lora_r > 0 else preset["train_parts"])
        if (train_parts == "lora") != (model_args.lora_r > 0):
            raise ConfigError(f"--train-parts {train_parts} with --lora-r {model_args.lora_r}: LoRA needs --lora-r > 0, "
                              "and --lora-r > 0 needs --train-parts lora")
        objective_class = OBJECTIVES[model_args.objective or preset["objective"]]
        text_sampling = model_args.text_sampling or preset["text_sampling"]
        arguments = (model_args, data_args, train_args)
        check_flags(TRAIN_FLAGS, given_fields(*arguments), SimpleNamespace(**{
            **{name: value for args in arguments for name, value in vars(args).items()},
            "objective": objective_class.name, "text_sampling": text_sampling, "train_parts": train_parts,
            "input": input_kind(data_args.train_data) if data_args.train_data else None}))
        if not 0 <= model_args.patch_dropout < 1:
            raise ConfigError(f"--patch-dropout must be in [0, 1), got {model_args.patch_dropout}")
        lock = TowerLock(model_args.lock_image, model_args.lock_image_unlocked_groups, model_args.lock_text,
                         model_args.lock_text_unlocked_layers, model_args.locked_norms_trainable)
        return cls(objective_class(**objective_class.options(model_args, data_args, train_args)),
                   text_sampling=text_sampling, train_parts=train_parts,
                   seed=train_args.seed, skip_bad_samples=data_args.skip_bad_samples, lock=lock)

    @property
    def description(self) -> str:
        """E.g. ``rewrites / multi-positive (sigmoid) / all`` (``/ all, image locked`` with a lock)."""
        lock = f", {self.lock.description}" if self.lock.active else ""
        return f"{self.text_sampling} / {self.objective.description} / {self.train_parts}{lock}"

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
        (``lora``: `peft` freezes the base model.) Then the locked towers' groups are frozen (`TowerLock`)."""
        if self.train_parts == "text":
            freeze_all_but_text_layers(model)
        if self.lock.active:
            self.lock.apply(model)
            if not any(parameter.requires_grad for parameter in model.parameters()):
                raise ConfigError("every parameter is locked: nothing would train")

    def prepare_data(self, model, dataset, tokenizer, max_length: int, processor, device):
        """(rows, collator) for the DataLoader: the objective's, with this method's `row_options`."""
        return self.objective.prepare_data(model, dataset, tokenizer, max_length, processor, device,
                                           self.row_options)

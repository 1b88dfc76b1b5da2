"""Generation backends: what turns a batch of prompts into continuations.

`TextGenerator` wraps ``transformers.pipeline("text-generation")``: raw-text prompts (the
model is a completion model), left padding, prompts sorted by length so batches pad
little, a context-length check, continuations returned in input order. Default sampling
is the paper's: temperature 0.9, top-p 0.95, at most 77 new tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import transformers

from .job import process_state

# A proposer maps (captions, ids, requests (row, source, k)) to one (raw rewrite, examples shown) per request:
# the rewrite job's interface to whatever writes the text (an LLM, EDA, back-translation).
Proposer = Callable[[Sequence[str], Sequence[str], list[tuple[int, str, int]]], list[tuple[str, Sequence]]]


GENERATION_DEFAULTS = dict(do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=77)


class TextGenerator:
    """Generates continuations of raw-text prompts with a text-generation pipeline, in batches.

    ``generate_kwargs`` go to ``generate`` (defaults: sampling, temperature 0.9, top-p 0.95,
    77 new tokens). A prompt whose token count plus ``max_new_tokens`` exceeds the model's
    context raises a ValueError naming the prompt.
    """

    def __init__(self, pipe, batch_size: int = 16, **generate_kwargs):
        self.pipe = pipe
        self.batch_size = batch_size
        self.generate_kwargs = {**GENERATION_DEFAULTS, **generate_kwargs}
        tokenizer = pipe.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.context = getattr(pipe.model.config, "max_position_embeddings", None) or tokenizer.model_max_length

    @classmethod
    def from_pretrained(cls, model: str, device=None, dtype: str = "auto", batch_size: int = 16, **generate_kwargs):
        """Load ``model`` (Hub id or folder) into a pipeline on ``device`` (default: accelerate's device)."""
        device = process_state().device if device is None else device
        pipe = transformers.pipeline("text-generation", model=model, device=device, dtype=dtype)
        return cls(pipe, batch_size=batch_size, **generate_kwargs)

    def check_lengths(self, prompts: Sequence[str], names: Sequence[str] | None = None) -> list[int]:
        """Token length of each prompt; raises if one leaves no room for ``max_new_tokens``."""
        lengths = [len(ids) for ids in self.pipe.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        budget = self.context - self.generate_kwargs["max_new_tokens"]
        for i, length in enumerate(lengths):
            if length > budget:
                name = names[i] if names is not None else f"prompt {i}"
                raise ValueError(
                    f"{name}: the prompt is {length} tokens; with max_new_tokens="
                    f"{self.generate_kwargs['max_new_tokens']} it exceeds the model's context of {self.context} "
                    "tokens (shorten the caption or use fewer examples per prompt)"
                )
        return lengths

    def __call__(self, prompts: Sequence[str], names: Sequence[str] | None = None) -> list[str]:
        """The generated continuation of each prompt (prompt text excluded), in input order."""
        lengths = self.check_lengths(prompts, names)
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        outputs = self.pipe(
            [prompts[i] for i in order], batch_size=self.batch_size, return_full_text=False, **self.generate_kwargs
        )
        completions = [""] * len(prompts)
        for i, output in zip(order, outputs):
            completions[i] = output[0]["generated_text"]
        return completions


def request_names(ids, requests) -> list[str]:
    """How errors name each request of a proposer: caption id and source."""
    return [f"caption id {ids[row]!r}, source {source!r}" for row, source, _ in requests]

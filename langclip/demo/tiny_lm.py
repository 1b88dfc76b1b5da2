"""A tiny causal LM built on the fly: for tests, benchmarks and the demo, where nothing can be downloaded.

`build_tiny_causal_lm` trains a byte-level BPE on ``texts``, wraps it in a left-padding
`PreTrainedTokenizerFast` and saves it beside a randomly initialised `LlamaForCausalLM`,
so ``pipeline("text-generation", model=out_dir)`` runs batched on CPU.
`train_tiny_causal_lm` then fits it for a few steps (e.g. on ``"source => target"`` lines)
so that it writes text rather than noise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


def build_tiny_causal_lm(
    texts: Sequence[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 1024,
    seed: int = 0,
) -> str:
    """Save a byte-level BPE tokenizer trained on ``texts`` and a random Llama to ``out_dir``; returns it."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",
        model_max_length=max_position_embeddings,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)


def train_tiny_causal_lm(
    model_dir: str | os.PathLike,
    texts: Sequence[str],
    steps: int | None = 200,
    seconds: float | None = None,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Fit the LM in ``model_dir`` on ``texts`` (one document each, ending in eos) and save it back.

    Stops after ``steps`` optimizer steps or ``seconds`` of wall time, whichever comes first
    (at least one must be given). Returns the loss of every step.
    """
    if steps is None and seconds is None:
        raise ValueError("give steps, seconds or both")
    if not texts:
        raise ValueError("texts is empty: nothing to train on")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    documents = [text + tokenizer.eos_token for text in texts]
    losses: list[float] = []
    start = time.monotonic()
    progress = tqdm(total=steps, desc="training tiny LM", unit="step")
    while (steps is None or len(losses) < steps) and (seconds is None or time.monotonic() - start < seconds):
        picks = torch.randint(len(documents), (batch_size,), generator=generator).tolist()
        batch = tokenizer([documents[i] for i in picks], padding=True, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        progress.update()
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    progress.close()
    model.eval()
    model.save_pretrained(model_dir)
    return losses

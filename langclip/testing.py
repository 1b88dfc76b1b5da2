"""What the tests, the benchmarks and the demo share to run offline, as `transformers.testing_utils` is for transformers.

`train_word_tokenizer`: a word-level tokenizer trained on the fly, for generated data. Real runs use the
checkpoint's own tokenizer; this one exists because no tokenizer can be downloaded where the demo and the
tests run. Layout: ``<bos> words <eos> <pad>...`` with ``<pad>`` = 0, so CLIP's text tower pools at the first
``<eos>``. `write_tar`: a WebDataset-style shard from (name, bytes) members.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def train_word_tokenizer(texts: Iterable[str], max_length: int = 32) -> PreTrainedTokenizerFast:
    """Lower-cased, punctuation-split word-level tokenizer over every word of ``texts``."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    bos, eos = tokenizer.token_to_id("<bos>"), tokenizer.token_to_id("<eos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=max_length,
    )


def write_tar(path, members: Iterable[tuple[str, bytes]]) -> None:
    """A tar file at ``path`` holding ``members``: (name, bytes) pairs, in that order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

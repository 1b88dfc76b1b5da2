"""The CLIPS tokenizer as a standard `transformers` fast tokenizer (no remote code needed to load it).

Content ids come from a lower-cased WordPiece vocabulary (``vocab.txt``, one piece per line,
the line number its id) with BERT's normaliser and pre-tokeniser. Before that, the text is
cleaned as CLIPS' tokenizer cleans it: NFC, HTML entities unescaped twice (``&amp;amp;`` ->
``&``), whitespace runs collapsed. A text becomes ``[bos] ids [eos]`` (ids 1 and 2), padded
with id 0 and cut to ``context_length - 1`` tokens; the text tower completes it to the
released layout ``[1] ids [2] 0 ... 0 [101]`` (`clips_text_layout`), so batches padded to
any length give the released model's features.

    tokenizer = clips_tokenizer("vocab.txt")         # a PreTrainedTokenizerFast
    tokenizer.save_pretrained("converted/clips")      # AutoTokenizer.from_pretrained loads it back

Not reproduced: ftfy's repair of mojibake (a ``tokenizer.json`` cannot run Python); clean
your text with ``ftfy.fix_text`` first if it has encoding damage.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# html.unescape for the entities web captions carry; applied twice, as CLIPS' basic_clean does.
HTML_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&#x27;": "'", "&apos;": "'",
                 "&nbsp;": " "}


def clips_normalizer() -> normalizers.Normalizer:
    """NFC, HTML unescape (twice), BERT's lower-casing normaliser, whitespace runs -> one space, stripped."""
    unescape = [normalizers.Replace(entity, text) for entity, text in HTML_ENTITIES.items()]
    return normalizers.Sequence([normalizers.NFC(), *unescape, *unescape, normalizers.BertNormalizer(lowercase=True),
                                 normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])


def clips_tokenizer(vocab_file: str, context_length: int = 80, bos_token_id: int = 1, eos_token_id: int = 2,
                    pad_token_id: int = 0, unk_token: str = "[UNK]") -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` for ``vocab_file`` giving ``[bos] ids [eos]``, at most ``context_length - 1`` ids."""
    with open(vocab_file, encoding="utf-8") as handle:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(handle)}
    if unk_token not in vocab:
        raise ValueError(f"{vocab_file}: the WordPiece vocabulary has no unknown token {unk_token!r}")
    if context_length < 4:
        raise ValueError(f"context_length must leave room for one token beside 3 specials, got {context_length}")
    by_id = {i: token for token, i in vocab.items()}
    missing = [i for i in (bos_token_id, eos_token_id, pad_token_id) if i not in by_id]
    if missing:
        raise ValueError(f"{vocab_file} has no line for the special token ids {missing} (line number = id)")
    bos, eos, pad = by_id[bos_token_id], by_id[eos_token_id], by_id[pad_token_id]
    backend = Tokenizer(models.WordPiece(vocab, unk_token=unk_token))
    backend.normalizer = clips_normalizer()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, bos_token_id), (eos, eos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=unk_token, model_max_length=context_length - 1, padding_side="right")

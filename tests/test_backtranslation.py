"""Back-translation through seq2seq translation models: tiny Marian models built in the test (en -> X -> en).

transformers 5 removed the ``translation`` pipeline, so the legs call ``generate``; the
reference below does the same by hand, one caption at a time. Marian's own tokenizer needs
``sentencepiece`` (not installed here), so the models use a word-level fast tokenizer built
with ``tokenizers``; the model is Marian's.
"""

import functools

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoTokenizer, MarianConfig, MarianMTModel

from conftest import CAPTIONS
from langclip.cli import main as cli
from langclip.testing import train_word_tokenizer
from langclip.processing.generation.baselines import BackTranslator, Seq2SeqTranslation, is_seq2seq
from langclip.processing.generation.filters import clean_rewrite

FRENCH = "un une deux trois rouge vert bleu petit chien voiture bateau sur herbe par la mer le les"


def tiny_marian(path, seed: int) -> str:
    tokenizer = train_word_tokenizer([" ".join(CAPTIONS), FRENCH], max_length=32)
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    root = tmp_path_factory.mktemp("marian")
    return tiny_marian(root / "en-x", 1), tiny_marian(root / "x-en", 2)


@functools.cache
def load(model_dir: str):
    return AutoTokenizer.from_pretrained(model_dir), MarianMTModel.from_pretrained(model_dir)


def translate(model_dir: str, text: str) -> str:
    """The reference: one text, no padding, greedy ``generate``."""
    tokenizer, model = load(model_dir)
    ids = model.generate(**tokenizer(text, return_tensors="pt"), max_new_tokens=8, do_sample=False)
    return tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def test_batched_legs_match_one_caption_at_a_time(marian, tiny_lm_dir):
    captions = CAPTIONS[:5]  # batches of 2 with padding
    legs = [Seq2SeqTranslation.from_pretrained(m, "cpu", "float32", 2, max_new_tokens=8, do_sample=False) for m in marian]
    texts = BackTranslator(*legs)(captions)
    middle = [translate(marian[0], caption) for caption in captions]
    assert middle != captions and texts == [translate(marian[1], text) for text in middle]
    assert is_seq2seq(marian[0]) and not is_seq2seq(tiny_lm_dir)  # which leg kind `rewrite` builds


def test_rewrite_cli_backtranslates_with_seq2seq_models(tmp_path, marian):
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS[:6]) + "\n")
    out = tmp_path / "out"
    args = ["rewrite", str(captions), "--method", "backtranslation", "--model", marian[0], "--backward-model",
            marian[1], "--output-dir", str(out), "--device", "cpu", "--max-new-tokens", "8", "--batch-size", "4"]
    assert cli(args) == 0
    data = load_from_disk(str(out)).to_dict()
    for caption, rewrites, statuses in zip(data["caption"], data["rewrites"], data["rewrite_status"]):
        cleaned, status = clean_rewrite(translate(marian[1], translate(marian[0], caption)), caption)
        assert (rewrites, statuses) == ([caption if cleaned is None else cleaned], [status])
    assert data["rewrite_sources"] == [["backtranslation"]] * 6
    assert f"back-translation: {marian[0]} then {marian[1]}" in (out / "README.md").read_text()

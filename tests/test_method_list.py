"""The one method list, `hub_cards.methods.METHODS`, against the places that name methods: the ``--method``
presets (`training.methods.PRESETS`), the README's preset table and the model card's loss wording.

The list lives in hub_cards, below training, so the presets are checked here rather than imported there."""

from pathlib import Path

from langclip.hub_cards.cards import LOSS_DESCRIPTIONS
from langclip.hub_cards.methods import CITATIONS, METHODS
from langclip.modeling.losses import CONTRASTIVE_LOSSES
from langclip.training.methods import PRESETS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def preset_table() -> str:
    """The README's preset table, from the method list and the presets."""
    lines = ["| preset (`--method`) | method | text sampling | objective | parts trained |",
             "| --- | --- | --- | --- | --- |"]
    for name, info in METHODS.items():
        preset = PRESETS[name]
        lines.append(f"| `{name}` | [{info.title}]({info.paper}) | {preset['text_sampling']} | {preset['objective']} | "
                     f"{preset['train_parts']} |")
    return "\n".join(lines)


def test_presets_are_the_listed_methods_in_order():
    assert list(PRESETS) == list(METHODS)


def test_readme_preset_table_is_generated_from_the_list():
    assert preset_table() in README


def test_the_cards_describe_every_contrastive_loss_and_cite_each_paper_once():
    assert set(LOSS_DESCRIPTIONS) == set(CONTRASTIVE_LOSSES)
    keys = [line for line in CITATIONS.splitlines() if line.startswith("@")]
    assert keys == ["@inproceedings{fan2023laclip,", "@article{liu2024clips,", "@article{sam2025pcclip,"]

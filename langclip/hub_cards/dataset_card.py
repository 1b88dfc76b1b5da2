"""Dataset cards for caption datasets rewritten by an LLM (LaCLIP's rewriting job).

The card records where the captions came from, which LLM rewrote them with which prompt,
how many rewrites each source produced, and how many fell back to the original caption.
The counts are also in the YAML metadata (``rewrites``), so `metadata_load` reads them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from huggingface_hub import DatasetCard, DatasetCardData

from .model_card import CITATIONS, _cell, _table


def dataset_card(
    pretty_name: str,
    source_datasets: Iterable[str],
    llm: str,
    prompt: str,
    rewrites_per_source: Mapping[str, int],
    fallbacks: Mapping[str, int],
    num_rows: int,
    license: str = "other",
    generation: Mapping | None = None,
) -> DatasetCard:
    """A card for a rewritten dataset.

    ``prompt`` is the in-context prompt as sent (task sentence, examples, ``query =>``);
    ``rewrites_per_source`` and ``fallbacks`` count, per rewrite source, the rewrites made and
    those replaced by the original caption (empty or unusable generations).
    """
    unknown = set(fallbacks) - set(rewrites_per_source)
    if unknown:
        raise ValueError(f"fallback counts name sources without rewrites: {', '.join(sorted(unknown))}")
    source_datasets = list(source_datasets)
    generation = dict(generation or {})
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        source_datasets=source_datasets,
        task_categories=["zero-shot-image-classification", "image-to-text"],
        tags=["langclip", "laclip", "synthetic-captions", "llm-rewrites"],
        rewrites={
            "llm": llm,
            "rows": num_rows,
            "per_source": dict(rewrites_per_source),
            "fallbacks": {source: fallbacks.get(source, 0) for source in rewrites_per_source},
            "generation": generation,
        },
    )
    counts = _table(
        ("source", "rewrites", "fell back to the original"),
        ((source, count, fallbacks.get(source, 0)) for source, count in rewrites_per_source.items()),
    )
    settings = _table(("setting", "value"), ((k, _cell(v)) for k, v in generation.items())) if generation else "-"
    body = f"""
# {pretty_name}

Image-text pairs from {", ".join(source_datasets) or "the source data"} ({num_rows} rows), with every caption
rewritten by `{llm}` through in-context learning, as in LaCLIP. The `caption` column holds the
original caption, `rewrites` the LLM rewrites and `rewrite_sources` the source of each.

## Rewrites

{counts}

A rewrite falls back to the original caption when the generation was empty or unusable.

## Prompt

```text
{prompt.rstrip()}
```

## Generation

{settings}

## Citation

```bibtex
{CITATIONS}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")

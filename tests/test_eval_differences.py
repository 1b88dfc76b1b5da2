"""PC-CLIP evaluation functions against hand computations."""

import math

import pytest
import torch

from langclip.evaluation.differences import (
    analogy_distance,
    attribute_ranking,
    comparative_class_embeddings,
    difference_classification,
    mean_and_stderr,
)


def test_difference_classification_counts_positive_cosines():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # directions: (1,-1)/sqrt2, (-1,1)/sqrt2, (1,-1)/sqrt2
    text = torch.tensor([[2.0, -1.0], [3.0, 0.0], [-1.0, 0.5]])  # cos > 0, < 0, < 0
    assert difference_classification(a, b, text) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one pair"):
        difference_classification(a[:0], b[:0], text[:0])


def test_mean_and_stderr():
    mean, err = mean_and_stderr([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert err == pytest.approx(0.2 / math.sqrt(3))  # sample std 0.2


def test_attribute_ranking_perfect_and_reversed():
    direction = torch.tensor([1.0, 0.0])
    images = torch.tensor([[math.cos(t), math.sin(t)] for t in (1.2, 0.9, 0.3, 0.1)])  # projections increase
    assert attribute_ranking(images, direction, [1, 2, 3, 4]) == pytest.approx({"spearman": 1.0, "kendall": 1.0})
    assert attribute_ranking(images, direction, [4, 3, 2, 1]) == pytest.approx({"spearman": -1.0, "kendall": -1.0})
    # one swapped pair of four: Kendall (5 - 1) / 6, Spearman 1 - 6 * 2 / (4 * 15)
    got = attribute_ranking(images, direction, [2, 1, 3, 4])
    assert got == pytest.approx({"spearman": 0.8, "kendall": 4 / 6})


def test_comparative_prompting_by_hand():
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    s1, s2 = torch.tensor([0.0, 0.0, 2.0]), torch.tensor([3.0, -3.0, 0.0])
    out = comparative_class_embeddings(t * 5, [(0, 1, s1), (2, 1, s2)], alpha=0.9)
    # estimates of class 1: t0 - n(s1) = (1,0,-1); t2 - n(s2) = (-1/sqrt2, 1/sqrt2, 1); mean of both
    mean = (torch.tensor([1.0, 0.0, -1.0]) + torch.tensor([-(0.5**0.5), 0.5**0.5, 1.0])) / 2
    expected = 0.9 * t[1] + 0.1 * mean
    torch.testing.assert_close(out[1], expected / expected.norm())
    torch.testing.assert_close(out[[0, 2]], t[[0, 2]])  # no differences point at classes 0 and 2
    torch.testing.assert_close(comparative_class_embeddings(t, [(0, 1, s1)], alpha=1.0), t)
    with pytest.raises(IndexError, match="outside 0..2"):
        comparative_class_embeddings(t, [(0, 3, s1)])


def test_analogy_distance():
    ta, tb = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    assert analogy_distance(ta, tb, torch.tensor([[5.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-7)
    assert analogy_distance(ta, tb, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)

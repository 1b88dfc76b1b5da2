"""Evaluation metrics against values worked out by hand on tiny embeddings, ties included."""

import math

import evaluate
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from langclip import LaCLIPModel
from langclip.evaluation.features import encode_images, encode_texts
from langclip.evaluation.few_shot import few_shot_accuracy, prototype_predictions
from langclip.evaluation.linear_probe import linear_probe
from langclip.evaluation.metrics import metric_path
from langclip.evaluation.retrieval import recall_at_k, retrieval_recall
from langclip.evaluation.templates import (
    LACLIP_IMAGENET_TEMPLATES,
    OPENAI_IMAGENET_TEMPLATES,
    check_templates,
    load_templates,
)
from langclip.evaluation.zero_shot import (
    average_templates,
    mean_per_class_accuracy,
    topk_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
)

# Rows: images 0..2; columns: texts 0..4 with text_to_image = [0, 0, 1, 2, 2].
# Image 0: best caption (text 0, 0.9) ties with text 2 of image 1 -> rank 1.
# Image 1: caption text 2 (0.7) beats every other text -> rank 0. Image 2: text 4 (0.6) -> rank 0.
# Text 1 (image 0) scores 0.1 for images 0 and 1: a tie -> rank 1. Text 2 (image 1) loses to image 0 -> rank 1.
SIMILARITY = torch.tensor(
    [
        [0.9, 0.1, 0.9, 0.3, 0.2],
        [0.2, 0.1, 0.7, 0.1, 0.0],
        [0.1, 0.0, 0.2, 0.5, 0.6],
    ]
)
TEXT_TO_IMAGE = torch.tensor([0, 0, 1, 2, 2])
EXPECTED_RECALL = {
    "image_to_text_R@1": 2 / 3,
    "image_to_text_R@2": 1.0,
    "text_to_image_R@1": 3 / 5,
    "text_to_image_R@2": 1.0,
}


def test_templates_sets():
    assert len(OPENAI_IMAGENET_TEMPLATES) == len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert len(LACLIP_IMAGENET_TEMPLATES) == 7 and set(LACLIP_IMAGENET_TEMPLATES) <= set(OPENAI_IMAGENET_TEMPLATES)
    assert check_templates(OPENAI_IMAGENET_TEMPLATES) == OPENAI_IMAGENET_TEMPLATES
    assert load_templates("laclip_imagenet") == LACLIP_IMAGENET_TEMPLATES


def test_template_file_errors_name_the_line(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\n\na photo without a slot\n")
    with pytest.raises(ValueError, match=r"templates.txt, line 3: template 'a photo without a slot'"):
        load_templates(str(path))
    with pytest.raises(ValueError, match="neither a built-in set"):
        load_templates("no_such_set")


def test_average_templates_by_hand():
    # Class 0: n([3, 4]) = [0.6, 0.8], n([0, 2]) = [0, 1]; mean [0.3, 0.9]; / sqrt(0.9).
    # Class 1: n([-1, 0]) twice -> [-1, 0].
    features = torch.tensor([[[3.0, 4.0], [0.0, 2.0]], [[-1.0, 0.0], [-5.0, 0.0]]])
    expected = torch.tensor([[0.3, 0.9], [-1.0, 0.0]]) / torch.tensor([[math.sqrt(0.9)], [1.0]])
    torch.testing.assert_close(average_templates(features), expected)


def test_topk_accuracy_counts_ties_against_the_model():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.2, 0.5, 0.3], [0.1, 0.2, 0.9]])
    # Row 0: label 0 ties with class 1 -> rank 1. Row 1: label 2 (0.3) loses to 0.5 -> rank 1. Row 2: rank 0.
    assert topk_accuracy(scores, torch.tensor([0, 2, 2]), topk=(1, 2)) == {"top1": 1 / 3, "top2": 1.0}
    # A model that scores every class alike gets no top-1 hit.
    assert topk_accuracy(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), topk=(1,)) == {"top1": 0.0}


def test_zero_shot_accuracy_uses_cosine_similarity():
    classifier = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    images = torch.tensor([[10.0, 1.0], [1.0, 3.0], [2.0, 1.0]])  # scale must not matter
    # predictions 0, 1, 0: class 0 recalls 1/1, class 1 recalls 1/2 -> mean per class 3/4 (top-1 is 2/3)
    assert zero_shot_accuracy(images, classifier, torch.tensor([0, 1, 1]), topk=(1, 2)) == {
        "top1": 2 / 3, "top2": 1.0, "mean_per_class": 0.75}


def test_mean_per_class_accuracy_by_hand_with_ties():
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.2, 0.9], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # class 0: row 0 right, row 1 a tie (counts against) -> 1/2; class 1: row 2 right, rows 3, 4 wrong -> 1/3;
    # class 2 never occurs, so it is not averaged: (1/2 + 1/3) / 2 = 5/12 (plain top-1: 2/5)
    assert mean_per_class_accuracy(scores, labels) == pytest.approx(5 / 12)
    assert topk_accuracy(scores, labels, (1,)) == {"top1": 2 / 5}
    with pytest.raises(ValueError, match="label 3 at row 0"):
        mean_per_class_accuracy(scores, torch.tensor([3, 0, 0, 0, 0]))


def test_topk_accuracy_errors():
    with pytest.raises(ValueError, match="empty evaluation set"):
        topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="label 7 at row 1"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0, 7]))


def test_recall_by_hand_with_ties_and_several_captions():
    assert recall_at_k(SIMILARITY, TEXT_TO_IMAGE, ks=(1, 2)) == pytest.approx(EXPECTED_RECALL)


def _brute_force_recall(similarity, text_to_image, k):
    sim = similarity.double().tolist()
    image_hits = []
    for i, row in enumerate(sim):
        best = max(s for j, s in enumerate(row) if text_to_image[j] == i)
        image_hits.append(sum(s >= best for j, s in enumerate(row) if text_to_image[j] != i) < k)
    text_hits = []
    for j, target in enumerate(text_to_image):
        column = [row[j] for row in sim]
        text_hits.append(sum(s >= column[target] for i, s in enumerate(column) if i != target) < k)
    return sum(image_hits) / len(image_hits), sum(text_hits) / len(text_hits)


def test_recall_matches_float64_brute_force():
    similarity = (torch.rand(7, 16) * 4).round() / 4  # coarse values: many ties
    text_to_image = torch.cat([torch.arange(7), torch.randint(0, 7, (9,))])
    results = recall_at_k(similarity, text_to_image, ks=(1, 3))
    for k in (1, 3):
        image, text = _brute_force_recall(similarity, text_to_image.tolist(), k)
        assert results[f"image_to_text_R@{k}"] == pytest.approx(image)
        assert results[f"text_to_image_R@{k}"] == pytest.approx(text)


def test_retrieval_recall_on_features():
    images = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    texts = torch.tensor([[3.0, 0.1], [0.1, 1.0], [1.0, 1.1]])  # text 2 (image 0) is closer to image 1
    results = retrieval_recall(images, texts, torch.tensor([0, 1, 0]), ks=(1,))
    assert results == {"image_to_text_R@1": 1.0, "text_to_image_R@1": 2 / 3}


def test_recall_errors():
    with pytest.raises(ValueError, match="image 1 has no caption"):
        recall_at_k(torch.zeros(3, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="text 1 points at image 5"):
        recall_at_k(torch.zeros(2, 2), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="0 images"):
        recall_at_k(torch.zeros(0, 2), torch.tensor([0, 0]))


def test_metric_modules_load_with_evaluate():
    recall = evaluate.load(metric_path("retrieval_recall"))
    captions = [[0, 1], [2], [3, 4]]
    assert recall.compute(predictions=SIMILARITY.tolist(), references=captions, ks=[1, 2]) == pytest.approx(
        EXPECTED_RECALL
    )
    with pytest.raises(ValueError, match="text 4 is no image's caption"):
        recall.compute(predictions=SIMILARITY.tolist(), references=[[0, 1], [2], [3]])
    accuracy = evaluate.load(metric_path("zero_shot_accuracy"))
    scores = [[1.0, 1.0, 0.0], [0.2, 0.5, 0.3], [0.1, 0.2, 0.9]]
    assert accuracy.compute(predictions=scores, references=[0, 2, 2], topk=[1, 2]) == {"top1": 1 / 3, "top2": 1.0}


def test_prototype_predictions_by_hand():
    # Prototypes: mean(n([1, 0]), n([0, 3])) = [0.5, 0.5] and n([-2, 0]) = [-1, 0].
    support = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    query = torch.tensor([[0.6, 0.8], [-0.6, 0.8], [0.0, -5.0]])
    # Squared distances: q0: 0.1 vs 3.2; q1: 1.3 vs 0.8; q2 = [0, -1]: 2.5 vs 2.0.
    predictions = prototype_predictions(support, torch.tensor([0, 0, 1]), query)
    assert predictions.tolist() == [0, 1, 1]


def test_few_shot_accuracy_and_interval_by_hand():
    # Four classes of 6 images; classes 0 and 1 share one feature, classes 2 and 3 are apart.
    # A 3-way episode holding both 0 and 1 scores 2/3 (one of them is always misread), any other 1.
    centres = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.arange(4).repeat_interleave(6)
    features = centres[labels]
    episodes = 40
    result = few_shot_accuracy(features, labels, n_way=3, n_shot=2, n_query=4, episodes=episodes, seed=3)
    confused = round((1 - result["accuracy"]) * 3 * episodes)
    assert 0 < confused < episodes
    assert result["accuracy"] == pytest.approx(1 - confused / (3 * episodes))
    std = (1 / 3) * math.sqrt(confused * (episodes - confused) / (episodes * (episodes - 1)))
    assert result["ci95"] == pytest.approx(1.96 * std / math.sqrt(episodes))
    assert few_shot_accuracy(features, labels, n_way=3, n_shot=2, n_query=4, episodes=episodes, seed=3) == result
    separable = few_shot_accuracy(torch.eye(4)[labels], labels, n_way=3, n_shot=2, n_query=4, episodes=5)
    assert separable == {"accuracy": 1.0, "ci95": 0.0}


def test_few_shot_needs_enough_classes():
    labels = torch.tensor([0] * 20 + [1] * 20 + [2] * 3)
    with pytest.raises(ValueError, match="only 2 of 3 classes have that many"):
        few_shot_accuracy(torch.randn(43, 4), labels, n_way=3, n_shot=5, n_query=15)


def test_linear_probe_chooses_c_on_validation():
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.arange(n) % 2
        features = rng.normal(0, 1, (n, 4))
        features[:, 0] += (2 * labels - 1) * 0.6  # class signal on one axis only, under noise
        return features, labels

    train, validation, test = split(60), split(40), split(40)
    cs = (1e-4, 1e-2, 1.0, 100.0)
    result = linear_probe(train, validation, test, cs=cs, progress=False)
    scores = {c: LogisticRegression(C=c, max_iter=1000).fit(*train).score(*validation) for c in cs}
    best = min(c for c in cs if scores[c] == max(scores.values()))
    assert result["C"] == best and result["validation_accuracy"] == scores[best]
    both = np.concatenate([train[0], validation[0]]), np.concatenate([train[1], validation[1]])
    refit = LogisticRegression(C=best, max_iter=1000).fit(*both)
    assert result["accuracy"] == refit.score(*test)
    with pytest.raises(ValueError, match="the test split needs one label per feature row"):
        linear_probe(train, validation, (np.zeros((0, 4)), np.zeros(0)), progress=False)


def test_zero_shot_classifier_batches_and_caches(tiny_config, tokenizer, tmp_path, monkeypatch):
    model = LaCLIPModel(tiny_config).eval()
    classnames, templates = ["red circle", "blue square", "green star"], ["a photo of a {}.", "a {} drawing"]
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, batch_size=4, cache_dir=tmp_path)
    texts = [t.format(c) for c in classnames for t in templates]
    one_by_one = torch.cat([encode_texts(model, tokenizer, [text], progress=False) for text in texts])
    torch.testing.assert_close(classifier, average_templates(one_by_one.view(3, 2, -1)))
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    def no_text_encoding(*args, **kwargs):
        raise AssertionError("the cached classifier should be read back, not recomputed")

    with monkeypatch.context() as patch:
        patch.setattr(model, "get_text_features", no_text_encoding)
        cached = zero_shot_classifier(model, tokenizer, classnames, templates, cache_dir=tmp_path)
        torch.testing.assert_close(cached, classifier)
    with torch.no_grad():
        model.text_projection.weight.mul_(2)
    zero_shot_classifier(model, tokenizer, classnames, templates, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # new text weights, new cache entry


def test_encode_images_batched_equals_one_by_one(tiny_config):
    model = LaCLIPModel(tiny_config).eval()
    pixels = torch.randn(5, 3, 32, 32)
    batched = encode_images(model, pixels.split(3), progress=False)
    single = torch.cat([encode_images(model, [p[None]], progress=False) for p in pixels])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(5))

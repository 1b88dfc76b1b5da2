"""Image-text retrieval Recall@K, both directions, several captions per image, as an `evaluate` metric.

    metric = evaluate.load("path/to/retrieval_recall")
    metric.compute(predictions=similarity_rows, references=caption_ids, ks=[1, 5, 10])
"""

import datasets
import evaluate
import torch
from langclip.evaluation.retrieval import recall_at_k

_DESCRIPTION = """
Recall@K for image-text retrieval. Each example is one image: its similarity to every text
and the indices of its own captions. Image->text is a hit when one of the image's captions
ranks in the top K; text->image is a hit when the caption's image ranks in the top K. A
candidate is in the top K when fewer than K wrong candidates score at least as high.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per image, its similarity to each of the texts.
    references (`list` of `list` of `int`): per image, the indices of its captions; every text
        belongs to exactly one image.
    ks (`list` of `int`, defaults to `[1, 5, 10]`): the K values to report.
Returns:
    `dict`: `image_to_text_R@K` and `text_to_image_R@K` in [0, 1] for every K.
"""

_CITATION = """
@inproceedings{fan2023laclip,
  title={Improving CLIP Training with Language Rewrites},
  author={Fan, Lijie and Krishnan, Dilip and Isola, Phillip and Katabi, Dina and Tian, Yonglong},
  booktitle={NeurIPS},
  year={2023}
}
"""


class RetrievalRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        similarity = torch.tensor(predictions)
        text_to_image = torch.full((similarity.shape[1],), -1, dtype=torch.long)
        for image, captions in enumerate(references):
            for text in captions:
                if not 0 <= text < len(text_to_image):
                    raise ValueError(f"image {image} lists caption {text}, outside 0..{len(text_to_image) - 1}")
                if text_to_image[text] != -1:
                    first = int(text_to_image[text])
                    raise ValueError(f"text {text} is listed as a caption of images {first} and {image}")
                text_to_image[text] = image
        if (text_to_image == -1).any():
            raise ValueError(f"text {int((text_to_image == -1).nonzero()[0])} is no image's caption")
        return recall_at_k(similarity, text_to_image, ks)

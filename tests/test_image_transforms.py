"""Image transforms against hand-computed and float64 references, and `CLIPImageProcessor`."""

import io
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from langclip.processing.transforms import (BadSampleError, ImageTransform, center_crop, decode_image, draft_for_crop,
                                           normalize_pixels, random_resized_crop_params, resize_shortest_edge,
                                           resized_crop, to_uint8_tensor)
from langclip.processing.collators import ContrastiveCollator

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def random_image(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_random_resized_crop_stays_within_scale_and_ratio():
    rng = random.Random(0)
    for _ in range(2000):
        top, left, h, w = random_resized_crop_params(90, 120, rng)
        assert 0 <= top <= 90 - h and 0 <= left <= 120 - w
        # rounding h and w moves the area and ratio by at most about one pixel per side
        assert 0.5 * 90 * 120 - (h + w) <= h * w <= 90 * 120
        assert 3 / 4 - 2 / h <= w / h <= 4 / 3 + 2 / h


def test_random_resized_crop_follows_torchvisions_draws():
    """The first draw that fits is used: area and log-aspect uniform, then top/left uniform."""
    params = random_resized_crop_params(100, 100, random.Random(7))
    rng = random.Random(7)
    area, aspect = 10000 * rng.uniform(0.5, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    assert (h, w) == params[2:] and params[:2] == (rng.randint(0, 100 - h), rng.randint(0, 100 - w))


def test_random_resized_crop_falls_back_to_a_central_crop_at_the_ratio_bound():
    # A 10 x 100 strip: no 50%-area crop with aspect <= 4/3 fits, so the centre 10 x 13 is taken.
    assert random_resized_crop_params(10, 100, random.Random(0)) == (0, (100 - 13) // 2, 10, 13)
    assert random_resized_crop_params(100, 10, random.Random(0)) == ((100 - 13) // 2, 0, 13, 10)


def test_normalize_matches_float64_formula():
    image = random_image(4, 5)
    transform = ImageTransform(4, MEAN, STD)
    expected = (np.asarray(image, dtype=np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(transform.normalize(to_uint8_tensor(image)).numpy(), expected.transpose(2, 0, 1),
                               atol=1e-6)


def test_full_image_crop_at_model_size_is_the_identity_resize():
    image = random_image(16, 16)
    transform = ImageTransform(16, MEAN, STD, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(transform(image), transform.normalize(to_uint8_tensor(image)))


def bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float64 antialiased bilinear weights: a triangle of half-width max(scale, 1) at each output
    pixel's centre (i + 0.5) * scale, normalised (PIL's and torchvision's antialiased resize)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out) + 0.5) * scale
    weights = np.maximum(0.0, 1 - np.abs((np.arange(size_in) + 0.5 - centres[:, None]) / support))
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("size", [8, 40])  # downscale and upscale
def test_train_crop_is_the_drawn_box_resized_bilinear(size):
    """Against a float64 separable resize of the box, and against PIL's bilinear resize of the box: the official
    LaCLIP transform (torchvision's RandomResizedCrop on a PIL image: crop, then resize, default bilinear)."""
    image = random_image(40, 60, seed=3)
    transform = ImageTransform(size, MEAN, STD, train=True, seed=5, uint8=True)
    top, left, h, w = random_resized_crop_params(40, 60, random.Random("5:(0, 'a')"))
    box = np.asarray(image, dtype=np.float64)[top : top + h, left : left + w]
    reference = np.einsum("yi,ijc,xj->cyx", bilinear_weights(h, size), box, bilinear_weights(w, size))
    pixels = transform(image, key=(0, "a"))
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, size, size)
    assert np.abs(pixels.numpy().astype(np.float64) - reference).max() <= 1.0
    official = np.asarray(image.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR))
    assert np.abs(pixels.numpy().astype(int) - official.transpose(2, 0, 1)).max() <= 1
    # keyed crops repeat; different keys differ
    assert torch.equal(transform(image, key=(0, "a")), pixels)
    assert not torch.equal(transform(image, key=(1, "a")), pixels)


def smooth_jpeg(height, width) -> bytes:
    """A JPEG of smooth colour ramps (what DCT scaling keeps almost exactly)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 40.0) * np.cos(y / 55.0)], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_jpeg_draft_decodes_smaller_only_while_the_crop_keeps_the_model_size():
    data = smooth_jpeg(768, 1024)
    for (h, w), expected in [((700, 600), (128, 96)), ((300, 300), (256, 192)), ((120, 100), (1024, 768)),
                             ((600, 300), (256, 192))]:
        image = Image.open(io.BytesIO(data))
        draft_for_crop(image, h, w, 64)  # at scale 1/k the crop is (h/k, w/k): k is the largest with both >= 64
        assert image.size == expected, (h, w)
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, format="PNG")
    image = Image.open(io.BytesIO(png.getvalue()))
    draft_for_crop(image, 300, 300, 64)
    assert image.size == (1024, 768)  # only JPEGs decode at a smaller scale


def test_train_crop_of_a_large_jpeg_matches_the_full_size_decode():
    """A draft decode at 1/k crops the drawn box snapped to its grid (each edge moves < k/2 px, under half an output
    pixel since h/k >= size) and resizes it from fewer pixels: equal to the full decode's resize of that box up to
    the resampling, on a smooth image."""
    data = smooth_jpeg(768, 1024)
    transform = ImageTransform(64, MEAN, STD, train=True, seed=2, uint8=True)
    full = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)
    scales = set()
    for key in range(8):
        box = random_resized_crop_params(768, 1024, random.Random(f"2:{key}"))
        k = max(k for k in (1, 2, 4, 8) if min(box[2:]) / k >= 64)
        snapped = [k * round(v / k) for v in box]
        assert all(abs(a - b) <= k / 2 for a, b in zip(snapped, box))
        pixels = transform(data, key=key)
        assert pixels.shape == (3, 64, 64)
        assert (pixels.float() - resized_crop(full, *snapped, 64).float()).abs().mean() < 1.5, key
        scales.add(k)
    assert max(scales) > 1, scales  # the draft path ran


def test_uint8_pixels_normalised_on_the_batch_equal_the_float_transform():
    images = [random_image(30, 50, seed=i) for i in range(3)]
    as_float = ImageTransform(16, MEAN, STD, train=True, seed=1)
    as_uint8 = ImageTransform(16, MEAN, STD, train=True, seed=1, uint8=True)
    ids = torch.arange(3)
    batch = {"pixel_values": torch.stack([as_uint8(im, key=(0, i)) for i, im in enumerate(images)]), "ids": ids}
    normalized = normalize_pixels(batch, MEAN, STD)
    torch.testing.assert_close(normalized["pixel_values"],
                               torch.stack([as_float(im, key=(0, i)) for i, im in enumerate(images)]))
    assert normalized["ids"] is ids and batch["pixel_values"].dtype == torch.uint8  # other keys and the input kept
    assert normalize_pixels(normalized, MEAN, STD)["pixel_values"] is normalized["pixel_values"]  # float: as is


def test_eval_transform_matches_clip_image_processor():
    processor = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24},
                                      image_mean=MEAN, image_std=STD)
    transform = ImageTransform.from_image_processor(processor)
    for height, width in [(30, 50), (64, 40), (24, 24)]:
        image = random_image(height, width, seed=height)
        expected = torch.as_tensor(np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0]))
        torch.testing.assert_close(transform(image), expected.float(), atol=1e-5, rtol=0)


def test_resize_and_center_crop_geometry():
    resized = resize_shortest_edge(Image.new("RGB", (50, 30)), 24)
    assert resized.size == (40, 24)
    marked = np.zeros((5, 7, 3), dtype=np.uint8)
    marked[1:4, 2:5] = 255
    assert (np.asarray(center_crop(Image.fromarray(marked), 3)) == 255).all()


def test_decode_image_reads_bytes_paths_and_names_corrupt_files(tmp_path):
    buffer = io.BytesIO()
    random_image(6, 6).save(buffer, format="PNG")
    path = tmp_path / "ok.png"
    path.write_bytes(buffer.getvalue())
    assert decode_image({"bytes": buffer.getvalue(), "path": None}).size == (6, 6)
    assert decode_image(str(path)).mode == "RGB"
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(BadSampleError, match=r"row 3 \(.*bad\.jpg\)"):
        decode_image({"bytes": None, "path": str(tmp_path / "bad.jpg")}, where="row 3")


def test_collator_skips_and_counts_bad_images_only_when_asked(tokenizer):
    good = random_image(12, 12)
    rows = [{"id": "0", "image": good, "caption": "a red circle"},
            {"id": "1", "image": b"broken", "caption": "a blue square"},
            {"id": "2", "image": good, "caption": "a green star"}]
    transform = ImageTransform(8, MEAN, STD, train=True)
    with pytest.raises(BadSampleError, match="row '1'"):
        ContrastiveCollator(tokenizer, 16, image_transform=transform)(rows)
    batch = ContrastiveCollator(tokenizer, 16, image_transform=transform, skip_bad_samples=True)(rows)
    assert batch["num_skipped"].sum().item() == 1 and batch["pixel_values"].shape == (2, 3, 8, 8)
    assert batch["input_ids"].shape[0] == 2

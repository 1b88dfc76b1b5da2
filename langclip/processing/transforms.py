"""Image transforms without torchvision: decode, crop/resize, to-tensor, normalise.

Training uses RandomResizedCrop (torchvision's algorithm, scale (0.5, 1), ratio (3/4, 4/3),
no flip, antialiased bilinear resize: LaCLIP's official ``transforms.RandomResizedCrop(224,
scale=(0.5, 1.0))``), resized by torch's uint8 kernel; evaluation resizes the shortest side
(bicubic) and centre-crops, as `CLIPImageProcessor` does. Mean, std and size come from the
model's image processor. With ``uint8=True`` a transform returns the uint8 pixels and
`normalize_pixels` normalises the collated batch later, on the device (as timm's prefetcher
does): a quarter of the bytes between DataLoader workers and the trainer, and no per-image
float work in the workers.

Random crops are keyed: with ``key`` (e.g. ``(epoch, row_id)``) the crop depends only on
(seed, key), so it is the same on any number of processes or workers and after a resume.
"""

from __future__ import annotations

import functools
import io
import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError

RESAMPLE = Image.BICUBIC  # the evaluation resize, as CLIPImageProcessor
# What --skip-bad-samples skips, counted per kind: an undecodable image, one over PIL's pixel limit
# (Image.MAX_IMAGE_PIXELS, twice over), a file cut short, and a caption that is not a non-empty string.
SKIP_KINDS = ("decode_error", "decompression_bomb", "truncated", "bad_caption")


class BadSampleError(DataError):
    """A sample that cannot be used; the message names it, ``kind`` is one of SKIP_KINDS."""

    def __init__(self, message: str, kind: str = "decode_error"):
        super().__init__(message)
        self.kind = kind


def _image_error_kind(error: Exception) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return "decompression_bomb"
    return "truncated" if "truncated" in str(error).lower() else "decode_error"


def decode_image(value, where: str = "", prepare: Callable[[Image.Image], None] | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a path, bytes, or a `datasets.Image(decode=False)` dict.

    ``prepare(image)`` runs on the opened image before its pixels are decoded (its size is known:
    e.g. to set a JPEG `draft`, see `draft_for_crop`). Raises `BadSampleError` naming ``where`` and
    the file when the image cannot be read: its ``kind`` says whether it is a decompression bomb,
    a truncated file or another decode error.
    """
    name = where
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict):
            name = f"{where} ({value.get('path')})" if value.get("path") else where
            source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
            if source is None:
                raise ValueError("the image has neither bytes nor a path")
            image = Image.open(source)
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str):
            name = f"{where} ({value})" if where else value
            image = Image.open(value)
        else:
            raise TypeError(f"expected an image, path or bytes, got {type(value).__name__}")
        if prepare is not None:
            prepare(image)
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as error:
        kind = _image_error_kind(error)
        hint = {"decompression_bomb": " (a decompression bomb: more pixels than PIL's Image.MAX_IMAGE_PIXELS allows)",
                "truncated": " (the file is truncated)"}.get(kind, "")
        raise BadSampleError(f"cannot read image {name}{hint}: {error}; pass --skip-bad-samples to skip and count "
                             "such samples", kind) from error


def random_resized_crop_params(
    height: int,
    width: int,
    rng: random.Random,
    scale: Sequence[float] = (0.5, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering ``scale`` of the area with aspect ``ratio`` (torchvision's algorithm).

    Ten tries at area ~ U(scale) * H * W and log-aspect ~ U(log ratio); if none fits, the
    central crop clamped to ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_shortest_edge(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so that the shorter side is ``size``, the longer ``int(size * long / short)``."""
    width, height = image.size
    if width <= height:
        return image.resize((size, int(size * height / width)), RESAMPLE)
    return image.resize((int(size * width / height), size), RESAMPLE)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` window, top/left offsets ``(side - size) // 2``."""
    width, height = image.size
    top, left = (height - size) // 2, (width - size) // 2
    return image.crop((left, top, left + size, top + size))


def draft_for_crop(image: Image.Image, height: int, width: int, size: int) -> None:
    """Let an undecoded JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's `draft`) when a
    (height, width) crop of it is still at least ``size`` px on both sides at that scale; else it decodes whole.
    Other formats, and images already decoded, are left as they are."""
    if image.format == "JPEG":
        image.draft("RGB", (math.ceil(image.width * size / width), math.ceil(image.height * size / height)))


def resized_crop(pixels: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """The (3, size, size) uint8 resize of ``pixels[:, top:top+height, left:left+width]`` (uint8 (3, H, W)).

    Antialiased bilinear (a triangle filter widened by the downscale factor, as PIL's and
    torchvision's bilinear resize), through torch's vectorised uint8 channels-last kernel.
    """
    crop = pixels[None, :, top : top + height, left : left + width]
    if (height, width) == (size, size):
        return crop[0].contiguous()
    crop = crop.contiguous(memory_format=torch.channels_last)
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].contiguous()


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 pixels of an RGB PIL image."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


@functools.lru_cache(maxsize=8)
def _pixel_affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """(scale, shift), (3, 1, 1) float32 on ``device``: 1 / (255 std) and -mean / std. Made once per device, so a
    training step copies nothing from the host (a copy of host memory to a GPU waits for the GPU)."""
    scale = torch.tensor([1 / (255.0 * s) for s in std], dtype=torch.float32, device=device).view(3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32, device=device).view(3, 1, 1)
    return scale, shift


def normalize_pixels(batch: dict, mean: Sequence[float], std: Sequence[float]) -> dict:
    """``batch`` with every uint8 ``pixel_values*`` tensor (..., 3, H, W) as float32 ``(x / 255 - mean) / std``.

    Runs where the batch is (the training device); float entries are returned as they are.
    """
    normalized = dict(batch)
    for key, value in batch.items():
        if key.startswith("pixel_values") and value.dtype == torch.uint8:
            scale, shift = _pixel_affine(tuple(mean), tuple(std), value.device)
            normalized[key] = torch.addcmul(shift, value.float(), scale)  # x * (1 / (255 std)) - mean / std
    return normalized


class ImageTransform:
    """PIL/bytes/path -> normalised (3, size, size) float tensor: ``(x / 255 - mean) / std``.

    ``train=True``: RandomResizedCrop(size, scale, ratio), antialiased bilinear; else resize the
    shortest side to ``size`` (bicubic) and centre-crop. ``uint8=True``: the (3, size, size)
    uint8 pixels instead; normalise the batch with `normalize_pixels`. Call as
    ``transform(image, key=None, where="")``.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        scale: Sequence[float] = (0.5, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        seed: int = 0,
        uint8: bool = False,
    ):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={mean}, std={std}")
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
        self.size, self.train, self.scale, self.ratio, self.seed = size, train, tuple(scale), tuple(ratio), seed
        self.mean, self.std, self.uint8 = tuple(mean), tuple(std), uint8
        self.rng = random.Random(seed)

    @classmethod
    def from_image_processor(cls, image_processor, train: bool = False, **kwargs) -> ImageTransform:
        """Size (``crop_size``), mean and std of a `CLIPImageProcessor`."""
        crop = image_processor.crop_size
        size = crop if isinstance(crop, int) else crop["height"]
        return cls(size, image_processor.image_mean, image_processor.image_std, train=train, **kwargs)

    def crop(self, image, key=None, where: str = "") -> torch.Tensor:
        """The (3, size, size) uint8 crop of ``image`` (decoded here): keyed RandomResizedCrop in training, else
        resize + centre crop.

        The random box is drawn from the image's full size, read before decoding; a JPEG then decodes
        at the smallest 1/2^k scale that keeps the box at least ``size`` px (`draft_for_crop`), and the
        box is scaled to match: the same box at any scale, and what is resized down is never upscaled.
        """
        if not self.train:
            return to_uint8_tensor(center_crop(resize_shortest_edge(decode_image(image, where), self.size), self.size))
        rng = self.rng if key is None else random.Random(f"{self.seed}:{key}")
        drawn = {}

        def draw(opened: Image.Image) -> None:
            drawn["full"] = opened.size
            drawn["box"] = random_resized_crop_params(opened.height, opened.width, rng, self.scale, self.ratio)
            draft_for_crop(opened, *drawn["box"][2:], self.size)

        decoded = decode_image(image, where, prepare=draw)
        (width, height), (top, left, h, w) = drawn["full"], drawn["box"]
        sy, sx = decoded.height / height, decoded.width / width  # 1 unless a JPEG draft decoded it smaller
        top, left, h, w = round(top * sy), round(left * sx), max(1, round(h * sy)), max(1, round(w * sx))
        return resized_crop(to_uint8_tensor(decoded), top, left, h, w, self.size)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float32 ``(x / 255 - mean) / std`` of uint8 (3, H, W) pixels."""
        return normalize_pixels({"pixel_values": pixels}, self.mean, self.std)["pixel_values"]

    def __call__(self, image, key=None, where: str = "") -> torch.Tensor:
        pixels = self.crop(image, key, where)
        return pixels if self.uint8 else self.normalize(pixels)

"""`default_image_processor` and `load_image_processor`: the PIL backend, quiet without torchvision, and saved folders
that plain transformers loads."""

import subprocess
import sys
import textwrap

from transformers import AutoImageProcessor, CLIPImageProcessorPil
from transformers.image_utils import PILImageResampling

from langclip.modeling.image_processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    default_image_processor,
    load_image_processor,
)


def test_default_is_clip_preprocessing_at_the_size():
    processor = default_image_processor(32)
    assert type(processor) is CLIPImageProcessorPil
    assert processor.size == {"shortest_edge": 32} and processor.crop_size == {"height": 32, "width": 32}
    assert processor.do_center_crop and processor.resample == PILImageResampling.BICUBIC
    assert list(processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]


def test_squash_resize_without_crop():
    processor = default_image_processor(24, IMAGENET_MEAN, IMAGENET_STD, PILImageResampling.BILINEAR, crop=False)
    assert processor.size == {"height": 24, "width": 24} and not processor.do_center_crop
    assert list(processor.image_std) == IMAGENET_STD and processor.resample == PILImageResampling.BILINEAR


def test_saved_folder_loads_with_plain_transformers(tmp_path):
    default_image_processor(32).save_pretrained(tmp_path)
    for loaded in (AutoImageProcessor.from_pretrained(tmp_path), load_image_processor(tmp_path)):
        assert loaded.to_dict() == default_image_processor(32).to_dict()


def test_no_torchvision_fallback_warning(tmp_path):
    """transformers warns "CLIPImageProcessor requires torchvision ... falling back" when that name is imported
    without torchvision; building, saving, loading and the commands that do so must not."""
    script = textwrap.dedent(f"""
        from transformers import AutoImageProcessor, AutoProcessor

        from langclip.cli import build_parser
        from langclip.modeling.auto import save_processors
        from langclip.modeling.image_processing import default_image_processor, load_image_processor
        from langclip.testing import train_word_tokenizer

        for command in ("train", "eval", "convert", "demo"):
            build_parser([command])  # imports the command's module
        save_processors({str(tmp_path)!r}, train_word_tokenizer(["a red dog"]), default_image_processor(32))
        load_image_processor({str(tmp_path)!r})
        AutoImageProcessor.from_pretrained({str(tmp_path)!r})
        AutoProcessor.from_pretrained({str(tmp_path)!r})  # the CLIPProcessor of a checkpoint folder
        import langclip.modeling.clips.convert_clips, langclip.training.model, langclip.evaluation.run
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr + done.stdout

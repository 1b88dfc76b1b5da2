from setuptools import find_packages, setup

setup(
    name="langclip",
    version="0.1.0",
    description="Train and evaluate CLIP with text written by language models (LaCLIP, CLIPS, PC-CLIP).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["langclip", "langclip.*"]),
    package_data={
        "langclip": ["processing/generation/pools/*.jsonl", "evaluation/metrics/*/*.py", "evaluation/suites/*.yaml"]
    },
    python_requires=">=3.10",
    install_requires=[
        # torch is a lower bound only: an installed torch that satisfies it is never replaced.
        "torch>=2.4",
        "transformers>=5.0",
        "accelerate>=1.0",
        "torchdata>=0.8",  # StatefulDataLoader: exact resume of streamed shards
        "datasets>=3.0",
        "peft>=0.13",
        "evaluate>=0.4",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "pillow>=10.0",
        "numpy>=1.24",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "tokenizers>=0.20",
        "matplotlib>=3.7",  # the eval suite's results.png
    ],
    extras_require={
        # `--backend endpoint`: the OpenAI-compatible client (vLLM, TGI, SGLang, llama.cpp, Ollama servers)
        "endpoint": ["openai>=1.40"],
        # Marian translation checkpoints (back-translation baseline) ship sentencepiece tokenizers
        "translation": ["sentencepiece>=0.2"],
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "pytest-timeout>=2.2", "tensorboard>=2.15", "matplotlib>=3.7",
                "openai>=1.40", "aiohttp>=3.9"],
    },
    entry_points={"console_scripts": ["langclip=langclip.cli:main"]},
)

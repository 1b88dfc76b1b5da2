"""Generation backends: what turns a batch of prompts into continuations.

Every backend is a callable ``generator(prompts, names=None, seeds=None) -> list[str | None]``
(continuations in input order, prompt text excluded):

- `TextGenerator` (``--backend transformers``) wraps ``transformers.pipeline("text-generation")``
  in process: raw-text prompts, left padding, prompts sorted by length so batches pad
  little, a context-length check. It never fails a row. Sampling uses the global RNG,
  which the job seeds per chunk; ``seeds`` are ignored.
- `EndpointGenerator` (``--backend endpoint``) sends each prompt to an OpenAI-compatible
  server (vLLM, TGI, SGLang, llama.cpp, Ollama) through the ``openai`` client: ``/v1/completions``,
  or ``/v1/chat/completions`` with ``chat=True``; ``concurrency`` requests in flight, a
  request-rate limit, timeouts and retries with exponential backoff on 429, 5xx and
  connection errors (the client's). Each request carries its row's seed, so a server that
  honours ``seed`` (vLLM does) samples the same text whatever the concurrency. A request
  that still fails gives None: the job marks its row pending and redoes it on resume.

`arguments.add_generation_arguments` defines the generation flags of `rewrite`, `differences` and
`meta-pairs` once (``--backend`` one of `arguments.BACKENDS`); `build_generator` makes the backend they ask for.
Default sampling is the paper's: temperature 0.9, top-p 0.95, at most 77 new tokens.
"""

from __future__ import annotations

import asyncio
import os
import sys
import zlib
from collections.abc import Callable, Sequence

import transformers

from ...errors import ConfigError
from .job import process_state

# A proposer maps (captions, ids, requests (row, source, k)) to one (raw rewrite or None, examples shown) per request:
# the rewrite job's interface to whatever writes the text (an LLM, EDA, back-translation). None: the request failed.
Proposer = Callable[[Sequence[str], Sequence[str], list[tuple[int, str, int]]], list[tuple[str | None, Sequence]]]

GENERATION_DEFAULTS = dict(do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=77)


def row_seed(seed: int, *key) -> int:
    """A 31-bit seed derived from (seed, key...): CRC-32 of their ``|``-joined text."""
    return zlib.crc32("|".join(map(str, (seed, *key))).encode()) & 0x7FFFFFFF


class TextGenerator:
    """Generates continuations of raw-text prompts with a text-generation pipeline, in batches.

    ``generate_kwargs`` go to ``generate`` (defaults: sampling, temperature 0.9, top-p 0.95,
    77 new tokens). A prompt whose token count plus ``max_new_tokens`` exceeds the model's
    context raises a ValueError naming the prompt.
    """

    def __init__(self, pipe, batch_size: int = 16, **generate_kwargs):
        self.pipe = pipe
        self.batch_size = batch_size
        self.generate_kwargs = {**GENERATION_DEFAULTS, **generate_kwargs}
        tokenizer = pipe.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.context = getattr(pipe.model.config, "max_position_embeddings", None) or tokenizer.model_max_length

    @classmethod
    def from_pretrained(cls, model: str, device=None, dtype: str = "auto", batch_size: int = 16, **generate_kwargs):
        """Load ``model`` (Hub id or folder) into a pipeline on ``device`` (default: accelerate's device)."""
        device = process_state().device if device is None else device
        pipe = transformers.pipeline("text-generation", model=model, device=device, dtype=dtype)
        return cls(pipe, batch_size=batch_size, **generate_kwargs)

    def check_lengths(self, prompts: Sequence[str], names: Sequence[str] | None = None) -> list[int]:
        """Token length of each prompt; raises if one leaves no room for ``max_new_tokens``."""
        lengths = [len(ids) for ids in self.pipe.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        budget = self.context - self.generate_kwargs["max_new_tokens"]
        for i, length in enumerate(lengths):
            if length > budget:
                name = names[i] if names is not None else f"prompt {i}"
                raise ValueError(
                    f"{name}: the prompt is {length} tokens; with max_new_tokens="
                    f"{self.generate_kwargs['max_new_tokens']} it exceeds the model's context of {self.context} "
                    "tokens (shorten the caption or use fewer examples per prompt)"
                )
        return lengths

    def __call__(self, prompts: Sequence[str], names: Sequence[str] | None = None, seeds=None) -> list[str]:
        """The generated continuation of each prompt (prompt text excluded), in input order."""
        lengths = self.check_lengths(prompts, names)
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        outputs = self.pipe(
            [prompts[i] for i in order], batch_size=self.batch_size, return_full_text=False, **self.generate_kwargs
        )
        completions = [""] * len(prompts)
        for i, output in zip(order, outputs):
            completions[i] = output[0]["generated_text"]
        return completions


class EndpointGenerator:
    """Continuations from an OpenAI-compatible server, ``concurrency`` requests at a time.

    ``base_url`` ends in ``/v1`` (e.g. ``http://host:8000/v1``); ``model`` is the served model
    name; ``chat`` sends each prompt as one user message to ``/chat/completions`` instead of
    ``/completions``. ``requests_per_second`` (None: no limit) spaces request starts evenly.
    ``timeout`` (s) bounds each attempt; ``max_retries`` retries with exponential backoff
    (0.5 s doubling up to 8 s, with jitter, or the server's Retry-After) on 408/409/429/5xx
    and connection errors. Works with ``HF_HUB_OFFLINE=1``: the ``openai`` client has no
    Hub offline switch (huggingface_hub's AsyncInferenceClient refuses every request then).
    ``failures`` counts requests that failed after retries; ``last_error`` says why.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        chat: bool = False,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        requests_per_second: float | None = None,
        **generate_kwargs,
    ):
        try:
            import openai
        except ImportError:
            raise ImportError("--backend endpoint needs the openai client: pip install 'langclip[endpoint]'") from None
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be positive, got {concurrency}")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ConfigError(f"--requests-per-second must be positive, got {requests_per_second}")
        self.openai = openai
        self.client_kwargs = dict(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries
        )
        self.model = model
        self.chat = chat
        self.concurrency = concurrency
        self.interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self.generate_kwargs = {**GENERATION_DEFAULTS, **generate_kwargs}
        self.failures = 0
        self.last_error = None
        self._loop = asyncio.new_event_loop()
        self._client = None
        self._next_start = 0.0

    def _request(self, prompt: str, seed: int | None) -> dict:
        settings = self.generate_kwargs
        request = dict(
            model=self.model,
            max_tokens=settings["max_new_tokens"],
            temperature=settings["temperature"] if settings["do_sample"] else 0.0,
            top_p=settings["top_p"] if settings["do_sample"] else 1.0,
        )
        if seed is not None:
            request["seed"] = seed
        if self.chat:
            request["messages"] = [{"role": "user", "content": prompt}]
        else:
            request["prompt"] = prompt
        return request

    async def _wait_turn(self) -> None:
        """Space request starts ``1 / requests_per_second`` apart."""
        if not self.interval:
            return
        now = self._loop.time()
        start = max(now, self._next_start)
        self._next_start = start + self.interval
        await asyncio.sleep(start - now)

    async def _one(self, prompt: str, seed: int | None, slots: asyncio.Semaphore) -> str | None:
        async with slots:
            await self._wait_turn()
            try:
                if self.chat:
                    response = await self._client.chat.completions.create(**self._request(prompt, seed))
                else:
                    response = await self._client.completions.create(**self._request(prompt, seed))
            except (self.openai.AuthenticationError, self.openai.PermissionDeniedError,
                    self.openai.NotFoundError) as error:  # no retry can mend these: stop the job
                raise ConfigError(f"the endpoint {self.client_kwargs['base_url']} refused the request "
                                  f"({type(error).__name__}: {error}); check --base-url, --model {self.model!r} and "
                                  "the key in --api-key-env") from error
            except self.openai.APIError as error:  # after the client's retries
                self.failures += 1
                self.last_error = f"{type(error).__name__}: {error}"
                return None
            text = completion_text(response, self.chat)
            if text is None:
                self.failures += 1
                self.last_error = f"an answer without a completion text: {str(response)[:200]!r}"
            return text

    async def _all(self, prompts, seeds) -> list[str | None]:
        if self._client is None:
            self._client = self.openai.AsyncOpenAI(**self.client_kwargs)
        slots = asyncio.Semaphore(self.concurrency)
        tasks = [asyncio.ensure_future(self._one(p, s, slots)) for p, s in zip(prompts, seeds)]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:  # a refused request: the others are cancelled, not left running
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def __call__(self, prompts: Sequence[str], names: Sequence[str] | None = None, seeds=None) -> list[str | None]:
        """The continuation of each prompt in input order; None where the request failed (after retries, or
        answered without a completion text). A refused request (401, 403, 404) raises `ConfigError`."""
        failed = self.failures
        seeds = [None] * len(prompts) if seeds is None else list(seeds)
        completions = self._loop.run_until_complete(self._all(list(prompts), seeds))
        if self.failures > failed:
            print(f"{self.failures - failed} of {len(prompts)} requests failed (last: {self.last_error}); "
                  "their rows are pending", file=sys.stderr)
        return completions

    def close(self) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.close())
        self._loop.close()


def completion_text(response, chat: bool) -> str | None:
    """The text of an OpenAI-style (chat) completion, or None when the answer holds none (no ``choices``, a null
    ``text``, a body that is not JSON); an empty chat message is "" (the filters reject it)."""
    choices = getattr(response, "choices", None)
    if not choices:
        return None
    if chat:
        message = getattr(choices[0], "message", None)
        return None if message is None else message.content or ""
    text = getattr(choices[0], "text", None)
    return text if isinstance(text, str) else None


def generation_config(args, model: str | None = None) -> dict:
    """The generation settings that determine the output (part of the job state)."""
    keys = ("backend", "max_new_tokens", "temperature", "top_p")
    config = {key: getattr(args, key) for key in keys}
    config["model"] = model or args.model
    if args.backend == "transformers":
        config["dtype"] = args.dtype
    else:
        config["chat"] = args.chat
    return config


def build_generator(args, model: str | None = None, **generate_kwargs) -> TextGenerator | EndpointGenerator:
    """The ``--backend`` generator for ``model`` (default ``--model``) with the sampling flags."""
    model = model or args.model
    generate_kwargs = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, **generate_kwargs
    )
    if args.backend == "transformers":
        return TextGenerator.from_pretrained(model, args.device, args.dtype, args.batch_size, **generate_kwargs)
    if not args.base_url:
        raise ConfigError("--backend endpoint needs --base-url (e.g. http://localhost:8000/v1)")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set; export it or drop the flag")
    return EndpointGenerator(args.base_url, model, api_key, args.chat, args.concurrency, args.timeout,
                             args.max_retries, args.requests_per_second, **generate_kwargs)


def request_names(ids, requests) -> list[str]:
    """How errors name each request of a proposer: caption id and source."""
    return [f"caption id {ids[row]!r}, source {source!r}" for row, source, _ in requests]

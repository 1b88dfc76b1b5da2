"""A loopback OpenAI-compatible server (``/v1/completions``, ``/v1/chat/completions``) on 127.0.0.1.

Test and benchmark helper, not library code. An aiohttp app in a background thread hands
each request's prompt to ``generate(prompts, seeds, settings) -> texts``, batching up to
``max_batch`` requests that wait together (like a serving engine's continuous batching);
`pipeline_generate` wraps a transformers text-generation pipeline (the tiny test LM).
Bounded: it answers at most ``max_requests`` requests and shuts down after ``lifetime``
seconds. For failure tests, ``statuses`` are answered (in order) before any generation, with
a ``retry-after-ms`` header, and once ``die_after`` requests have been taken (and are
answered), every later request has its connection dropped without an answer, as from a
killed server.

    with OpenAIServer(pipeline_generate(pipe)) as server:
        EndpointGenerator(server.base_url, "tiny")(["a prompt"])

``requests`` logs every request body, ``authorizations`` its Authorization header; ``generation_seconds`` sums the wall time of the
``generate`` calls (the server's own generation time).
"""

from __future__ import annotations

import asyncio
import threading
import time

import torch
from aiohttp import web


def pipeline_generate(pipe):
    """``generate`` for a text-generation pipeline: one batched call; a lone request with a
    seed is sampled from that seed (so the text does not depend on concurrency)."""

    def generate(prompts, seeds, settings):
        if len(prompts) == 1 and seeds[0] is not None:
            torch.manual_seed(seeds[0])
        sampling = settings["temperature"] > 0
        kwargs = dict(max_new_tokens=settings["max_tokens"], do_sample=sampling)
        if sampling:
            kwargs.update(temperature=settings["temperature"], top_p=settings["top_p"])
        outputs = pipe(list(prompts), batch_size=len(prompts), return_full_text=False, **kwargs)
        return [output[0]["generated_text"] for output in outputs]

    return generate


class OpenAIServer:
    def __init__(self, generate, model: str = "tiny", max_batch: int = 1, max_requests: int = 10_000,
                 lifetime: float = 300.0, statuses=(), die_after: int | None = None):
        self.generate, self.model, self.max_batch = generate, model, max_batch
        self.max_requests, self.lifetime = max_requests, lifetime
        self.statuses, self.die_after = list(statuses), die_after
        self.requests, self.authorizations, self.answered, self.generation_seconds = [], [], 0, 0.0
        self.accepted = 0
        self.base_url = None
        self._ready = threading.Event()
        self._thread = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        if len(self.requests) > self.max_requests:
            return web.json_response({"error": {"message": "request budget spent"}}, status=503)
        if self.statuses:
            status = self.statuses.pop(0)
            return web.json_response({"error": {"message": f"scripted {status}"}}, status=status,
                                     headers={"retry-after-ms": "10"})
        if self.die_after is not None:
            if self.accepted >= self.die_after:
                request.transport.close()  # dead: the connection drops without an answer
                return web.Response(status=500)
            self.accepted += 1
        chat = request.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        settings = {key: body.get(key, default) for key, default in (("max_tokens", 16), ("temperature", 1.0), ("top_p", 1.0))}
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((prompt, body.get("seed"), settings, future))
        text = await future
        self.answered += 1
        choice = {"index": 0, "finish_reason": "length", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        kind = "chat.completion" if chat else "text_completion"
        return web.json_response({"id": f"x{len(self.requests)}", "object": kind, "created": 0, "model": self.model,
                                  "choices": [choice]})

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            groups = {}  # one generate call per distinct setting
            for item in batch:
                groups.setdefault(tuple(sorted(item[2].items())), []).append(item)
            for items in groups.values():
                start = time.perf_counter()
                try:
                    texts = await loop.run_in_executor(
                        None, self.generate, [i[0] for i in items], [i[1] for i in items], items[0][2]
                    )
                except Exception as error:  # noqa: BLE001 - the request fails, the server lives
                    texts = error
                self.generation_seconds += time.perf_counter() - start
                for n, (*_, future) in enumerate(items):
                    if not future.done():
                        future.set_exception(texts) if isinstance(texts, Exception) else future.set_result(texts[n])

    async def _serve(self) -> None:
        self._queue, self._stopping = asyncio.Queue(), asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        batcher = asyncio.create_task(self._batcher())
        self._ready.set()
        try:
            await asyncio.wait_for(self._stopping.wait(), self.lifetime)
        except asyncio.TimeoutError:
            pass
        batcher.cancel()
        await runner.cleanup()

    def start(self) -> "OpenAIServer":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

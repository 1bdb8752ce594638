"""Fuzz the server's request parsing: arbitrary and JSON-shaped bodies on every POST route
of the real ASGI app (authentication gate, pydantic models, parameter checks, engine)
serving the tiny model in-process.

Every answer must be a 2xx, a 4xx, or 503/529 (busy; 529 is Anthropic's); any other 5xx or an
exception is a finding.
"""

from __future__ import annotations

import json
import time

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama.server.app import create_app
    from sarai_llama.server.settings import Settings

from starlette.testclient import TestClient

ROUTES = ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize", "/v1/embeddings", "/v1/messages",
          "/v1/messages/count_tokens", "/v1/responses"]
FIELDS = ["prompt", "messages", "content", "tokens", "input", "max_tokens", "n_predict", "temperature", "top_p",
          "top_k", "min_p", "typical_p", "n", "stream", "stop", "logit_bias", "seed", "grammar", "n_probs",
          "logprobs", "top_logprobs", "echo", "repeat_penalty", "penalty_last_n", "mirostat", "mirostat_tau",
          "presence_penalty", "frequency_penalty", "response_format", "stream_options", "add_special",
          "with_pieces", "encoding_format", "max_completion_tokens", "role", "suffix", "ignore_eos",
          # Anthropic Messages, OpenAI Responses
          "system", "stop_sequences", "tools", "tool_choice", "output_config", "instructions", "max_output_tokens",
          "text", "previous_response_id", "store", "parallel_tool_calls"]

settings = Settings.create(str(_common.tiny_model()), ctx_size=256, parallel=2, threads=1, max_tokens_limit=8,
                           log_level="error")
app, state = create_app(settings)
CLIENT = TestClient(app)
CLIENT.__enter__()  # lifespan: the model loads in a thread
for _ in range(600):
    if CLIENT.get("/health").status_code == 200:
        break
    time.sleep(0.1)
else:
    raise SystemExit("the fuzz server did not become ready")


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**40), 2**40)
    if kind == 3:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind in (4, 5):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 7:
        if fdp.ConsumeBool():
            return {"role": "user", "content": _value(fdp, depth + 1)}
        block = ["text", "tool_use", "tool_result", "function_call", "function_call_output", "message", "image"]
        return {"type": block[fdp.ConsumeIntInRange(0, len(block) - 1)], "text": _value(fdp, depth + 1),
                "content": _value(fdp, depth + 1), "id": "a", "tool_use_id": "a", "call_id": "a", "name": "f",
                "input": _value(fdp, depth + 1), "output": _value(fdp, depth + 1)}
    return {fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    route = ROUTES[fdp.ConsumeIntInRange(0, len(ROUTES) - 1)]
    if fdp.ConsumeBool():  # raw bytes
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:  # a JSON object of known fields with fuzzed values (NaN/inf included: Python's json writes them)
        obj = {FIELDS[fdp.ConsumeIntInRange(0, len(FIELDS) - 1)]: _value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 6))}
        body = json.dumps(obj).encode()
    r = CLIENT.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500 or r.status_code in (503, 529), (route, body[:300], r.status_code, r.text[:300])


if __name__ == "__main__":
    _common.run(TestOneInput)

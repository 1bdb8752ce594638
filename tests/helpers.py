"""What several test modules share: a real ``sarai-llama serve`` process on 127.0.0.1.

Test modules import from here, never from one another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from typing import Any

from conftest import free_port

__all__ = ["ASK", "CITY", "FAMILIES", "SCHEMAS", "SPECIALS", "STARTUP_S", "TEMPLATES", "TOOLS", "UNITS", "Server"]

TEMPLATES = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models" / "templates"
#: The families whose tool calls the README lists (one template each where several share a format).
FAMILIES = {
    "qwen2.5": "Qwen-Qwen2.5-7B-Instruct.jinja",
    "qwen3": "Qwen-Qwen3-0.6B.jinja",
    "hermes3": "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
    "llama3.1": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "llama3.3": "meta-llama-Llama-3.3-70B-Instruct.jinja",
    "mistral-nemo": "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "ministral3": "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
    "functionary3.1": "meetkai-functionary-medium-v3.1.jinja",
    "firefunction2": "fireworks-ai-llama-3-firefunction-v2.jinja",
    "granite4": "ibm-granite-granite-4.0.jinja",
    "kimi-k2": "moonshotai-Kimi-K2.jinja",
}
#: The family's special tokens, for a vocabulary of words and specials (beside byte fallback only).
SPECIALS = {
    "qwen2.5": ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"),
    "llama3.1": ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>",
                 "<|eom_id|>"),
    "mistral-nemo": ("[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"),
}
CITY: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                        "required": ["city"], "additionalProperties": False}
UNITS: dict[str, Any] = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["C", "F"]},
                                                          "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                         "required": ["unit", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": CITY}},
         {"type": "function", "function": {"name": "forecast", "parameters": UNITS}}]
#: Each tool's argument schema, by name.
SCHEMAS = {"get_weather": CITY, "forecast": UNITS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

STARTUP_S = 60.0


class Server:
    """One ``sarai-llama serve`` process; ``stop()`` ends it (SIGKILL if it will not go)."""

    def __init__(self, model: Path | None, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        """``model``: the positional model (None: models by name only, ``--models-dir`` / ``--model``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"sarai-serve-{self.port}.log", "w+b")
        cmd = [sys.executable, "-m", "sarai_llama", "serve", *([str(model)] if model else []), "--port",
               str(self.port), "--threads", "2", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = STARTUP_S) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.output()}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def client(self, key: str = "none") -> Any:
        """The official ``openai`` client for this server."""
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def model_id(self) -> str:
        return self.client().models.list().data[0].id

    def metrics(self) -> dict[str, float]:
        """Every series without labels but ``model``, summed over the models."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", timeout=10).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if set(sample.labels) <= {"model"}:
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()

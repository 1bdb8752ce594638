#!/usr/bin/env python3
"""One image in (test-1.jpeg): encode time, first-token time, and a later turn with and without image reuse.

    python tools/bench_vision.py [--text M.gguf --mmproj P.gguf | --make tiny|siglip-400m] [-r 3] [--threads 2]

Without files, ``--make`` writes a random pair into a temporary folder (tools/random_mmproj.py):
``tiny`` (a 64-wide llama and a 16-token gemma3 projector) or ``siglip-400m`` (Gemma 3's
SigLIP-so400m tower at 896 px, F16, for a 640-wide llama: a real projector's size and cost).
Per round, interleaved:

- cold: a chat about the image, never seen (its bytes get a trailer after the JPEG's end, which
  stb ignores, so the SHA-256 differs): encode ms (the projector's own timer) and the first
  token's time (stream, time to the first chunk after the role chunk);
- turn 2 reused: the next turn of that conversation (same image, the answer, a new question):
  the image's encoding comes from the cache of encodings and its KV from the engine's prefix;
- turn 2 not reused: the same turn with the image's bytes changed again (what a server that
  does not key images by their bytes pays: encode and prefill everything again).

Prints milliseconds per round, medians and the reused / not reused ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JPEG = ROOT / "vendor/llama.cpp/tools/mtmd/test-1.jpeg"


def make(kind: str, folder: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tools"))
    from random_gguf import write_tiny_llama
    from random_mmproj import SIGLIP_400M, TINY_CHAT_TEMPLATE, write_tiny_mmproj, write_vision_pair

    if kind == "tiny":
        return write_vision_pair(folder / "tiny.gguf", folder / "tiny-mmproj.gguf")
    text = write_tiny_llama(folder / "text.gguf", n_embd=640, n_layer=4, n_head=8, n_ff=2048, n_ctx_train=4096,
                            f16=True, chat_template=TINY_CHAT_TEMPLATE, add_space_prefix=False,
                            special_tokens=("<|system|>", "<|user|>", "<|assistant|>"))
    return text, write_tiny_mmproj(folder / "siglip-mmproj.gguf", text_n_embd=640, f16=True, **SIGLIP_400M)


def first_token_ms(llm, messages) -> float:
    t0 = time.perf_counter()
    for chunk in llm.create_chat_completion(messages, max_tokens=2, temperature=0, stream=True):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content") is not None \
                and "role" not in chunk["choices"][0]["delta"]:
            return (time.perf_counter() - t0) * 1000
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text")
    ap.add_argument("--mmproj")
    ap.add_argument("--make", choices=["tiny", "siglip-400m"], default="tiny")
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from sarai_llama import Llama

    with tempfile.TemporaryDirectory() as tmp:
        text, mmproj = (Path(args.text), Path(args.mmproj)) if args.text else make(args.make, Path(tmp))
        llm = Llama(str(text), mmproj=str(mmproj), n_ctx=4096, n_batch=1024, n_ubatch=1024, n_threads=args.threads,
                    verbose=False)
        vision = llm.runtime.vision
        image = JPEG.read_bytes()
        rows: dict[str, list[float]] = {"encode": [], "cold first token": [], "turn 2 reused": [],
                                        "turn 2 not reused": []}
        trailer = 0

        def conversation(data: bytes, turn2: bool) -> list[dict]:
            url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
            first = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                  {"type": "text", "text": "What is in this picture?"}]}]
            return first + [{"role": "assistant", "content": "A picture."},
                            {"role": "user", "content": "And what colour is it?"}] if turn2 else first

        for r in range(args.rounds):
            trailer += 1
            seen = image + trailer.to_bytes(4, "little")
            rows["cold first token"].append(first_token_ms(llm, conversation(seen, False)))
            rows["encode"].append(vision.stats()["last_encode_ms"])
            rows["turn 2 reused"].append(first_token_ms(llm, conversation(seen, True)))
            trailer += 1
            rows["turn 2 not reused"].append(
                first_token_ms(llm, conversation(image + trailer.to_bytes(4, "little"), True)))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in rows.items()), flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"{args.text or args.make}: image {JPEG.name}, {args.threads} threads, median of {args.rounds}:")
        for k, v in med.items():
            print(f"  {k:18s} {v:9.1f} ms")
        print(f"  turn 2 reused / not reused: {med['turn 2 reused'] / med['turn 2 not reused']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

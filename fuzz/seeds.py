"""Seed corpora for the harnesses, generated (never committed as binaries).

    python fuzz/seeds.py OUT_DIR        -> OUT_DIR/<harness>/seed-NNN

Each seed is an input in its harness's own encoding: the harnesses read their
input with atheris' FuzzedDataProvider, so a seed is a few leading choice bytes
followed by the payload (a file, a text, a JSON body). The GGUF seeds are the
tiny test model and Gemma's header; the chat-template seeds are real templates
(Gemma's, read from its GGUF, when installed) and small hand-written ones.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import _common

GRAMMARS = [
    'root ::= "yes" | "no"\n',
    'root ::= [a-z]+ ("," [a-z]+)*\n',
    'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= [0-9]+ | "(" expr ")"\n',
    'root ::= "{" ws pair (ws "," ws pair)* ws "}"\npair ::= "\\"" [a-z]* "\\"" ws ":" ws [0-9]{1,3}\n'
    'ws ::= [ \\t\\n]*\n',
    '# a comment\nroot ::= item{2,4}\nitem ::= [^\\n]? "x"\n',
    'root ::= (((("a"))))\n',
    'root ::= "\\u00e9" [\\x41-\\x5A] <[1]>\n',
]
TEMPLATES = [
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
    "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}",
    "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content | trim }}{% endfor %}",
    "{% set x = messages | length %}{{ x }}{{ raise_exception('no') if x > 3 }}",
]
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name"]},
    {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3},
    {"enum": ["a", "b", 1, None]},
    {"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "boolean"}]},
    {"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}},
    {"type": "string", "format": "date-time"},
]
BODIES = [
    (0, {"prompt": "the a", "max_tokens": 4, "temperature": 0}),
    (0, {"prompt": [1, 2, 3], "max_tokens": 2, "logprobs": 2, "stop": ["a"], "logit_bias": {"5": -100}}),
    (0, {"prompt": "x", "stream": True, "n": 2, "grammar": 'root ::= "a"'}),
    (1, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "top_p": 0.5}),
    (1, {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "logprobs": True,
         "top_logprobs": 2}),
    (2, {"content": "the <s> a", "add_special": True, "with_pieces": True}),
    (3, {"tokens": [1, 5, 9]}),
    (4, {"input": ["a", "b"], "encoding_format": "base64"}),
]


def _png(width: int, height: int, grey: bool = False) -> bytes:
    """A small PNG made by hand (zlib only): a gradient, RGB or greyscale."""
    chan = 1 if grey else 3
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 13 + c * 50) % 256 for x in range(width) for c in range(chan))
                    for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if grey else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def image_seeds() -> list[bytes]:
    """fuzz_image's: test-1.jpeg whole and cut, PNGs of several shapes; the last two bytes are choices."""
    jpeg = (_common.ROOT / "vendor/llama.cpp/tools/mtmd/test-1.jpeg").read_bytes()
    images = [jpeg, jpeg[:4096], _png(16, 16), _png(1, 1), _png(40, 7, grey=True), _png(64, 64)[:100]]
    return [img + b"\x00\x00" for img in images] + [jpeg[:2000] + _png(8, 8) + bytes([200, 1])]


def _write(out: Path, name: str, seeds: list[bytes]) -> None:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds):
        (d / f"seed-{i:03d}").write_bytes(s)


def generate(out: Path) -> None:
    work = _common.workdir()
    tiny = _common.tiny_model(work).read_bytes()
    gemma = _common.gemma_model()
    # FuzzedDataProvider reads ConsumeIntInRange/ConsumeBool choices from the END of the
    # input and byte payloads from the front, so the choice bytes go last.
    gguf = [tiny + b"\x00", tiny[:4096] + b"\x00", b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 16 + b"\x00"]
    gguf += [bytes([i, 255 - i, i * 7 % 256, 1]) * 4 + b"\x01" for i in range(0, 256, 37)]
    gguf += [bytes([i]) * 8 + b"\x02" for i in range(0, 256, 51)]
    if gemma is not None:
        with open(gemma, "rb") as f:  # its header and the start of its vocabulary
            gguf.append(f.read(65536) + b"\x00")
    _write(out, "gguf", gguf)
    texts = [b"", b"Hello world", b"<s> the a </s>", b"<start_of_turn>user\nhi<end_of_turn>", "\u00e9\u4e2d\U0001F600".encode(),
             b"\xff\xfe\xc3\x28\xe2\x82", b"  \n\t\r ", b"<0x41><unk>"]
    _write(out, "tokenize", [t + bytes([flags]) for t in texts for flags in (0, 7)])
    _write(out, "grammar", [g.encode() + b"\x01" for g in GRAMMARS])
    _write(out, "state", [bytes([m]) * 16 for m in (0, 1, 2)])
    body_seeds = []
    for route, body in BODIES:
        body_seeds.append(json.dumps(body).encode() + bytes([1, route]))
    _write(out, "server", body_seeds)
    templates = list(TEMPLATES)
    if gemma is not None:
        from sarai_llama import _core

        own = _core.inspect_gguf(str(gemma)).get("tokenizer.chat_template")
        if isinstance(own, bytes):
            templates.append(own.decode("utf-8", errors="replace"))
    _write(out, "chat_template", [t.encode() + b"\x01\x02" for t in templates])
    _write(out, "json_schema", [json.dumps(s).encode() for s in SCHEMAS])
    _write(out, "image", image_seeds())
    # Raw bytes first (the tokenizer's), then the choices fuzz_utf8 reads from the end.
    _write(out, "utf8", [t + b"root ::= [\\x80-\\xff]+" + bytes([16, 8, c, 3, 1, m]) for t in texts
                         for c in (0, 2, 3) for m in (0, 3)])


if __name__ == "__main__":
    generate(Path(sys.argv[1]))

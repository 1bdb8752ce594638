"""Random-weight projector (mmproj) GGUFs for llama.cpp's mtmd, written with the ``gguf`` package.

A Gemma 3 vision tower as llama.cpp's converter writes it (``clip.projector_type``
"gemma3": a SigLIP ViT, a 2-D average pool of ``pool`` x ``pool`` patches, an RMS
norm and the input projection into the text model's embedding width), at any size:
tiny for tests, SigLIP-400M shaped for benchmarks. The text model beside it is any
GGUF whose embedding width is ``text_n_embd`` (``tools/random_gguf.py --mmproj``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: SigLIP-so400m at Gemma 3's 896-pixel input, the vision tower of Gemma 3 4B/12B/27B.
SIGLIP_400M = {"n_embd": 1152, "n_layer": 27, "n_head": 16, "n_ff": 4304, "image_size": 896, "patch_size": 14,
               "pool": 4}


def write_tiny_mmproj(path: Path, *, text_n_embd: int, n_embd: int = 32, n_layer: int = 2, n_head: int = 4,
                      n_ff: int = 64, image_size: int = 64, patch_size: int = 4, pool: int = 4, f16: bool = False,
                      seed: int = 0) -> Path:
    """Write a random-weight gemma3 projector for a text model of width ``text_n_embd``.

    An image becomes ``(image_size / patch_size / pool) ** 2`` embeddings (defaults: 64 px,
    4 px patches, pools of 4: 16); ``n_embd``, ``n_layer``, ``n_head``, ``n_ff``: the ViT's
    width, depth, heads and MLP width. ``f16`` stores the matrices in F16 (norms, biases
    and position embeddings stay F32, as in converted files).
    """
    import gguf

    if image_size % patch_size or (image_size // patch_size) % pool:
        raise ValueError("image_size must be a multiple of patch_size * pool")
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("sarai-tiny-random-gemma3-mmproj")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "gemma3")
    w.add_uint32("clip.vision.embedding_length", n_embd)
    w.add_uint32("clip.vision.feed_forward_length", n_ff)
    w.add_uint32("clip.vision.block_count", n_layer)
    w.add_uint32("clip.vision.projection_dim", text_n_embd)
    w.add_uint32("clip.vision.attention.head_count", n_head)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_uint32("clip.vision.image_size", image_size)
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_uint32("clip.vision.projector.scale_factor", pool)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    w.add_bool("clip.use_gelu", True)

    def mat(name: str, *shape: int) -> None:
        # Scaled by 1/sqrt(fan-in), so activations keep their size through the layers.
        data = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(np.prod(shape[1:])))
        w.add_tensor(name, data.astype(np.float16) if f16 else data)

    def vec(name: str, n: int, value: float | None = None) -> None:
        data = np.full(n, value, dtype=np.float32) if value is not None else \
            rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        w.add_tensor(name, data)

    n_patches = (image_size // patch_size) ** 2
    mat("v.patch_embd.weight", n_embd, 3, patch_size, patch_size)
    vec("v.patch_embd.bias", n_embd)
    w.add_tensor("v.position_embd.weight", rng.standard_normal((n_patches, n_embd), dtype=np.float32) * 0.02)
    for i in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            mat(f"v.blk.{i}.{name}.weight", n_embd, n_embd)
            vec(f"v.blk.{i}.{name}.bias", n_embd)
        for name in ("ln1", "ln2"):
            vec(f"v.blk.{i}.{name}.weight", n_embd, 1.0)
            vec(f"v.blk.{i}.{name}.bias", n_embd)
        mat(f"v.blk.{i}.ffn_up.weight", n_ff, n_embd)
        vec(f"v.blk.{i}.ffn_up.bias", n_ff)
        mat(f"v.blk.{i}.ffn_down.weight", n_embd, n_ff)
        vec(f"v.blk.{i}.ffn_down.bias", n_embd)
    vec("v.post_ln.weight", n_embd, 1.0)
    vec("v.post_ln.bias", n_embd)
    vec("mm.soft_emb_norm.weight", n_embd, 1.0)
    # Stored as the converter stores it: (vision width, text width); the graph transposes it.
    mat("mm.input_projection.weight", n_embd, text_n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


#: A chat template for the tiny text model: turns, with the text parts of a content list in order.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{% if m.content is string %}{{ m.content }}{% else %}"
    "{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def write_vision_pair(text_path: Path, mmproj_path: Path, *, n_embd: int = 64, seed: int = 0,
                      **projector: int) -> tuple[Path, Path]:
    """A random tiny llama (F32, :data:`TINY_CHAT_TEMPLATE`) and a gemma3 projector for it
    (``projector``: :func:`write_tiny_mmproj`'s sizes)."""
    from random_gguf import write_tiny_llama  # beside this file: tools/ is on the path of both

    write_tiny_llama(text_path, n_embd=n_embd, n_ctx_train=1024, seed=seed, chat_template=TINY_CHAT_TEMPLATE,
                     special_tokens=("<|system|>", "<|user|>", "<|assistant|>"), add_space_prefix=False)
    write_tiny_mmproj(mmproj_path, text_n_embd=n_embd, seed=seed + 1, **projector)
    return text_path, mmproj_path

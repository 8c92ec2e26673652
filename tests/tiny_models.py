"""Tiny language models for tests, built offline (no hub access) and saved with save_pretrained.

`build_tiny_llama(folder)` writes a random 2-layer `LlamaForCausalLM` with a word-level tokenizer
(readable output: words, letters, digits and the GLM answer-box tokens) and a chat template that
understands OpenAI content parts. With `train=[(messages, reply), ...]` it is first fitted for a few
optimizer steps on those replies, so a test can make the model answer some questions right more
often than others (pass rates that are not all 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

_TEXT = (
    "the a of to and in is it that for on with as was at by be this are from or have an they which one you "
    "were her all she there would their we him been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many answer question image chart number color "
    "red blue green yellow black white cat dog bird box left right top bottom yes how which count shown "
    "put your final between and picture photo value zero three four five six seven eight nine ten"
)
WORDS = _TEXT.split()
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|image|>"]
MARKERS = ["<|begin_of_box|>", "<|end_of_box|>", "<think>", "</think>"]
"""Added but not special (as in GLM's tokenizer): decoding with skip_special_tokens keeps them."""
SYMBOLS = [*"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"0123456789", *".,:;?!()/-+=%'\""]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>"
    "{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for p in m.content %}"
    "{% if p.type == 'text' %}{{ p.text }}{% else %}<|image|>{% endif %}"
    "{% endfor %}{% endif %}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(extra_special: Sequence[str] = ()) -> Any:
    """A word-level fast tokenizer: whitespace/punctuation split, unknown words become <unk>."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in [*SPECIAL, *extra_special, *MARKERS, *SYMBOLS, *WORDS, *(w.capitalize() for w in WORDS)]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [*SPECIAL, *extra_special]])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKERS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(
    folder: str | Path,
    *,
    seed: int = 0,
    hidden: int = 48,
    layers: int = 2,
    train: Sequence[tuple[list[dict[str, Any]], str]] = (),
    steps: int = 60,
    lr: float = 3e-3,
) -> Path:
    """Write a tiny random Llama (and its tokenizer) to `folder`; optionally fit it to `train` replies."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if train:
        _fit(model, tokenizer, train, steps, lr)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _fit(model: Any, tokenizer: Any, train: Sequence[tuple[list[dict[str, Any]], str]], steps: int, lr: float) -> None:
    """A few full-batch AdamW steps on the replies only (the prompt tokens are masked out of the loss)."""
    import torch

    rows = []
    for messages, reply in train:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p_ids + r_ids, [-100] * len(p_ids) + r_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
VLM_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% else %}<|image|>{% endif %}",
    "{% elif p.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}",
)


def build_tiny_qwen2vl(folder: str | Path, *, seed: int = 0, hidden: int = 32) -> Path:
    """Write a tiny random `Qwen2VLForConditionalGeneration` and its processor (images of at most
    112x112 px, 4-16 image tokens each) to `folder`."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer(VISION_TOKENS)
    tokenizer.chat_template = VLM_CHAT_TEMPLATE
    size = {"min_pixels": 56 * 56, "max_pixels": 112 * 112, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**size),
        video_processor=Qwen2VLVideoProcessor(**size),
        tokenizer=tokenizer,
        chat_template=VLM_CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    special["pad_token_id"] = tokenizer.pad_token_id
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},  # sums to head_dim / 2
            "tie_word_embeddings": True,
            **special,
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
        **special,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


TINY_CLIP_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(root: Path) -> dict[str, str]:
    """A tiny CLIP (32-d embeddings, random weights, saved and loaded the real way) and an aesthetic head
    shaped like LAION's improved predictor (layers.{0,2,4,6,7}), scaled down to a 32-d input."""
    import json

    import open_clip
    import torch

    arch = root / "mmcurate-tiny-clip.json"
    arch.write_text(json.dumps(TINY_CLIP_ARCH))
    open_clip.add_model_config(str(arch))
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("mmcurate-tiny-clip", pretrained=None)
    ckpt = root / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    dims = [(32, 24), (24, 16), (16, 8), (8, 4), (4, 1)]
    head = {}
    for idx, (i, o) in zip((0, 2, 4, 6, 7), dims, strict=True):
        head[f"layers.{idx}.weight"] = torch.randn(o, i) * 0.3
        head[f"layers.{idx}.bias"] = torch.randn(o) * 0.1
    head_path = root / "aesthetic.pth"
    torch.save(head, head_path)
    wide = {"weight": torch.randn(1, 768), "bias": torch.zeros(1)}
    torch.save(wide, root / "aesthetic-768.pth")
    return {"arch": str(arch), "ckpt": str(ckpt), "head": str(head_path), "wide": str(root / "aesthetic-768.pth")}

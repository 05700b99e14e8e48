"""Tiny language models and tokenizers built locally, for tests, benchmarks and the CPU benchmark.

Nothing is downloaded: a byte-level BPE tokenizer is trained with ``tokenizers`` on generated text,
wrapped as a ``PreTrainedTokenizerFast`` (with EOS, pad and a chat template) and saved with
``save_pretrained``; the models are random-init GPT-2 configs saved the same way, so every caller
loads them back through ``from_pretrained`` exactly as it would a hub model.

    >>> from lm_runs.tiny import build_tiny_lm
    >>> path = build_tiny_lm("/tmp/tiny")                    # tokenizer + GPT2LMHeadModel
    >>> build_tiny_lm("/tmp/pm", num_labels=2)                # tokenizer + GPT2ForSequenceClassification
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

__all__ = ["CHAT_TEMPLATE", "build_tiny_tokenizer", "build_tiny_lm", "tiny_corpus", "main"]

#: A minimal chat template: "User: ...\nAssistant:" turns, the assistant's turns closed by EOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'system' %}System: {{ message['content'] }}\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_WORDS = (
    "the a cat dog bird fish runs jumps sleeps eats red blue green small big fast slow happy sad "
    "rock paper scissors yes no maybe good bad water fire tree stone sun moon star why how what "
    "who tell me about write story poem answer question explain please thanks one two three four"
).split()


def tiny_corpus(num_lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic lines of random words from a small vocabulary (tokenizer training text)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(num_lines)]


def build_tiny_tokenizer(
    out_dir: str | Path, vocab_size: int = 320, corpus: Sequence[str] | None = None, *, pad_is_eos: bool = False
):
    """Train a byte-level BPE tokenizer on ``corpus`` (default :func:`tiny_corpus`) and save it.

    Special tokens: ``<|endoftext|>`` (EOS and BOS) and ``<|pad|>`` (pad, distinct from EOS so that
    masking padding never masks the EOS a model must learn); with ``pad_is_eos`` EOS is the only special
    token and also pads. The chat template is :data:`CHAT_TEMPLATE`; decoding never cleans up spaces.
    Returns the tokenizer loaded back from ``out_dir``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pad = "<|endoftext|>" if pad_is_eos else "<|pad|>"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(["<|endoftext|>", pad])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = corpus if corpus is not None else tiny_corpus()
    text = list(text) + ["User: Assistant: System:"]  # the chat template's words tokenize compactly
    bpe.train_from_iterator(text, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token=pad,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def build_tiny_lm(
    out_dir: str | Path,
    *,
    vocab_size: int = 320,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 256,
    num_labels: int | None = None,
    seed: int = 0,
    corpus: list[str] | None = None,
) -> Path:
    """Build and save a tokenizer plus a random-init GPT-2 (2 layers × 64 dims by default).

    ``num_labels=None`` gives a causal LM (``GPT2LMHeadModel``); an integer gives a sequence
    classifier with that many labels (``GPT2ForSequenceClassification``, e.g. a preference model).
    Dropout is 0 so that forward passes are deterministic. Returns ``out_dir``.
    """
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out_dir, vocab_size=vocab_size, corpus=corpus)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if num_labels is None:
        model = GPT2LMHeadModel(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    else:
        config.num_labels = num_labels
        model = GPT2ForSequenceClassification(config)
    model.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    """``python -m lm_runs.tiny DIR [--num_labels 2]``: build a tiny model (and tokenizer) into DIR."""
    import argparse

    parser = argparse.ArgumentParser(description="Build a tiny local tokenizer + random-init GPT-2.")
    parser.add_argument("out_dir")
    parser.add_argument("--num_labels", type=int, default=None, help="a sequence classifier with this many labels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_lm(args.out_dir, num_labels=args.num_labels, seed=args.seed))


if __name__ == "__main__":
    from lm_runs.launcher import run_entry_point

    run_entry_point(main)

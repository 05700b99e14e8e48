"""The tiny model and its corpus: prompts, SFT examples, a byte-level BPE tokenizer with EOS as its only
special token, a random-init GPT-2, and π_ref fine-tuned from it by ``lm_runs.sft``.

Prompts are "<type> game: tell me about the <noun>" (``game.PROMPT_TYPES``); training and evaluation
nouns differ. An SFT response starts with a word of the prompt type's favoured class with probability
``favoured_prob``, so π_ref favours class 0 on forward prompts and class 1 on backward ones.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from lm_runs.tiny import build_tiny_tokenizer  # the tiny models' BPE and chat template, EOS as the only special token

from .game import PROMPT_TYPES, check_classes, prompt_type, text_class

__all__ = [
    "WORD_POOL",
    "TRAIN_NOUNS",
    "EVAL_NOUNS",
    "make_prompts",
    "lead_words",
    "make_sft_corpus",
    "build_benchmark_model",
    "quiet",
    "sft_reference",
]

#: Words the SFT responses are made of; each falls in the class of its first letter.
WORD_POOL = (
    "apple bird cat dog egg fish goat hat ice jam kite lemon moon nest owl pear queen rock sun star "
    "tree umbrella van water yak zebra"
).split()

#: Nouns of the prompts ("<type> game: tell me about the <noun>"); training and evaluation nouns differ.
TRAIN_NOUNS = (
    "river mountain city forest ocean garden castle island desert village bridge market "
    "library school window kitchen harbor meadow valley tower station palace temple canyon"
).split()
EVAL_NOUNS = "lake cave field road farm park shop hill".split()


def make_prompts(nouns: Sequence[str]) -> list[str]:
    """Every prompt type × noun: "<type> game: tell me about the <noun>"."""
    return [f"{kind} game: tell me about the {noun}" for kind in PROMPT_TYPES for noun in nouns]


def lead_words(num_classes: int, per_class: int = 2) -> list[list[str]]:
    """The first ``per_class`` words of :data:`WORD_POOL` in each class (the SFT responses' first words)."""
    K = check_classes(num_classes)
    out: list[list[str]] = [[] for _ in range(K)]
    for word in WORD_POOL:
        c = text_class(word, K)
        if len(out[c]) < per_class:
            out[c].append(word)
    return out


def make_sft_corpus(prompts: Sequence[str], num_classes: int, examples: int, favoured_prob: float, seed: int = 0) -> list[dict[str, str]]:
    """SFT examples {prompt, completion}: the completion's first word is from the type's favoured class
    with probability ``favoured_prob`` (else a uniformly chosen other class), the class's first lead
    word twice as often as its second, then 0–3 words of :data:`WORD_POOL`."""
    K = check_classes(num_classes)
    rng = random.Random(seed)
    leads = lead_words(K)
    rows = []
    for i in range(examples):
        x = prompts[i % len(prompts)]
        favoured = PROMPT_TYPES[prompt_type(x)]["favoured_class"] % K
        c = favoured if rng.random() < favoured_prob else rng.choice([k for k in range(K) if k != favoured])
        first = leads[c][0] if rng.random() < 2 / 3 or len(leads[c]) == 1 else leads[c][1]
        words = [first] + [rng.choice(WORD_POOL) for _ in range(rng.randint(0, 3))]
        rows.append({"prompt": x, "completion": " ".join(words)})
    return rows


def build_benchmark_model(out_dir: str | Path, corpus: Sequence[str], *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, seed: int = 0) -> Path:
    """A byte-level BPE tokenizer trained on ``corpus`` whose ONLY special token is EOS (also BOS and pad;
    ``lm_runs.tiny.build_tiny_tokenizer(pad_is_eos=True)``, no space clean-up on decoding) — what makes
    class(response) = token_class[first token] exact (``game``'s module docstring) — plus a random-init GPT-2
    (dropout 0), saved."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out_dir, corpus=corpus, pad_is_eos=True)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    return out_dir


def quiet(trainer) -> None:
    """Drop the Trainer's log printer (the benchmark shows its own progress bar)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def sft_reference(model_dir: str | Path, data: str | Path, out_dir: str | Path, *, epochs: float, learning_rate: float) -> None:
    """π_ref: ``lm_runs.sft`` (its SFTConfig and build_trainer) fine-tunes the model in ``model_dir`` on
    the SFT examples in ``data`` (JSON lines) for ``epochs`` epochs at a constant ``learning_rate``
    (batch 32, seed 0, CPU); ``lm_runs.checkpoints.save_final_model`` saves it in ``out_dir``."""
    from lm_runs.checkpoints import save_final_model
    from lm_runs.sft import SFTConfig, build_trainer

    config = SFTConfig(
        model_name_or_path=str(model_dir), dataset=str(data), output_dir=str(out_dir),
        num_train_epochs=epochs, learning_rate=learning_rate, per_device_train_batch_size=32,
        warmup_steps=0, weight_decay=0.0, lr_scheduler_type="constant", use_cpu=True, report_to="none",
        save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0, max_length=64,
    )
    trainer = build_trainer(config)
    quiet(trainer)
    trainer.train()
    save_final_model(trainer, str(out_dir), use_peft=False)


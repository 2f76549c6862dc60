"""A tiny chat model built in the test session: a byte-level BPE tokenizer trained on a few lines and a 2-layer
Llama with random weights. No downloads; a few seconds on CPU."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    '{"name": "Ana", "age": 41, "state": "NY", "education": "Bachelor\'s degree"}',
    "The quick brown fox jumps over the lazy dog. I live in Wyoming and work as a nurse.",
    'Answer: A. Answer: B. (C) D. Yes, no, maybe. 0123456789 [] {} : , " true false null',
    "My name is Maria; I am 35 years old and I vote in every election.",
]


def _training_texts() -> list[str]:
    """Short chat turns whose answers are brief prose or compact JSON, so a few training steps teach the model to
    close strings and stop: enough to exercise every code path of the LLM stages quickly."""
    answers = [
        '{"AGE": 41, "SEX": "Female", "STATE": "Ohio"}',
        '{"name": "Ana", "age": 35, "job": "nurse", "summary": "Calm."}',
        '{"a": "x", "b": 2, "c": "yes"}',
        "She is 41 and lives in Ohio. She works as a nurse at the county hospital.",
        "He is 67, retired, and lives in Texas with his wife and their old dog.",
        "A",
        "B",
    ]
    return [f"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>" for a in answers]


def build_tiny_model(path: Path, seed: int = 0, train_steps: int = 150) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if train_steps:
        batch = fast(_training_texts(), padding=True, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(train_steps):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path

"""A tiny Big Five text classifier built in the test session: a word-level tokenizer trained on a few sentences
and a 2-layer BERT with random weights and five regression outputs. No downloads; about a second on CPU."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "I love meeting new people and trying new things at parties.",
    "I plan every detail of my week and keep my desk tidy.",
    "I worry a lot about what could go wrong at work.",
    "I prefer quiet evenings alone with a good book.",
    "Helping my neighbours makes me happy and I trust people.",
]


def build_tiny_classifier(path: Path, labels: list[str] | None = None, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        model_max_length=128,
    )  # fmt: skip
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(fast), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=128, num_labels=5, problem_type="regression",
        id2label=dict(enumerate(labels)) if labels else None,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path

"""Word-level tokenizers for the demo models, built with the `tokenizers` library.

A normalizer first turns every run of whitespace (tabs, newlines, no-break spaces) into one
space and strips the ends, so "a  yellow " reads as "a yellow" rather than holding an empty,
unknown word; the training texts are single-spaced, so it changes none of their tokens. A
Metaspace pre-tokenizer marks each word's leading space with "▁" and a punctuation split
isolates "." and "-", so "3-1" becomes "▁3", "-", "1"; the Metaspace decoder turns the marks
back into spaces, so decoding reproduces the text exactly. The server only sees the saved
tokenizer.json, whose post-processor appends </s> when encoding (the model is trained that way).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from export.demo.tasks import caption_vocabulary_texts, report_vocabulary_texts

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3, in this order


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )


def build_word_tokenizer(texts: Iterable[str]) -> Tokenizer:
    """A tokenizer whose vocabulary is the special tokens then every piece of `texts`, sorted
    (so the ids depend only on the word set, not on the order the texts come in)."""
    pre_tokenizer = _pre_tokenizer()
    pieces = {piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(text)}
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(sorted(pieces)))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return tokenizer


def report_tokenizer() -> Tokenizer:
    """The summarizer's tokenizer: reports and summaries share one vocabulary."""
    return build_word_tokenizer(report_vocabulary_texts())


def caption_tokenizer() -> Tokenizer:
    return build_word_tokenizer(caption_vocabulary_texts())


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token (raises if the tokenizer lacks it)."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise KeyError(f"tokenizer has no {token!r}")
    return token_id

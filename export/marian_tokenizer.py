"""A `tokenizers` tokenizer for Marian checkpoints (Helsinki-NLP/opus-mt-*), which transformers
only offers as a slow, sentencepiece-backed MarianTokenizer.

MarianTokenizer splits the source text with source.spm and looks the pieces up in vocab.json
(pieces it lacks become <unk>), appends </s>, and decodes ids through vocab.json back to pieces.
Here that is one Unigram model over vocab.json's ids, scored by source.spm: its pieces keep their
scores, every other vocab.json piece (target-side only) gets a score so low that a source path
always wins, so encoding picks source.spm's pieces. The normalizer (the SentencePiece model's
own character map), pre-tokenizer and decoder are those of transformers' T5 tokenizer.
Not reproduced: the Moses punctuation normalisation MarianTokenizer applies only when
`sacremoses` is installed, and separate source/target vocabularies (refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from export.errors import ExportError

# Below any real piece's log-probability sum over an ordinary input, so target-only pieces are
# never preferred to source pieces (only to <unk>, for characters source.spm does not cover).
TARGET_ONLY_SCORE = -1e4


def marian_fast_tokenizer(slow: Any) -> Tokenizer:
    """The `tokenizers` equivalent of a loaded MarianTokenizer."""
    from transformers.convert_slow_tokenizer import import_protobuf

    if slow.separate_vocabs:
        raise ExportError(
            "Marian checkpoints with separate source/target vocabularies are not supported"
        )
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(Path(slow.spm_files[0]).read_bytes())
    if proto.trainer_spec.model_type != 1:
        raise ExportError("Marian source.spm is not a unigram SentencePiece model")
    source_scores = {piece.piece: piece.score for piece in proto.pieces if piece.type == 1}
    by_id = sorted(slow.encoder.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ExportError("Marian vocab.json ids are not 0..n-1")
    vocab = [(piece, source_scores.get(piece, TARGET_ONLY_SCORE)) for piece, _ in by_id]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=slow.encoder[str(slow.unk_token)]))
    # As transformers' T5 tokenizer: the model's character map, then each whitespace-split word
    # with its own "▁" (whose offset is the word's first character).
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:
        tokenizer.normalizer = normalizers.Precompiled(charsmap)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    # MarianTokenizer.decode strips the text it joins (a trailing bare "▁" leaves no space).
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            decoders.Fuse(),
            decoders.Replace(Regex(r"\A\s+|\s+\z"), ""),
        ]
    )
    tokenizer.add_special_tokens([str(token) for token in slow.all_special_tokens])
    eos = str(slow.eos_token)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, slow.encoder[eos])]
    )
    return tokenizer


def is_marian(tokenizer: Any) -> bool:
    return type(tokenizer).__name__ == "MarianTokenizer"

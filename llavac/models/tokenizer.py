"""An offline tokenizer for the tiny models, trained in-process in a few milliseconds.

Nothing can be downloaded from a model hub here, yet the tiny models must go through the
same processor + chat template + tokenizer path as a real checkpoint so that tests exercise
the real code. The tokenizer is a byte-level BPE: it never fails on unseen text (emoji,
URLs, other scripts all fall back to bytes), while the words of the small corpus below --
sentiment words, the prompt wording, the three label words, digits and punctuation -- become
single tokens, so label scoring on tiny models works with one token per label.

Byte-level pre-tokenization splits at spaces and punctuation, so BPE merges never cross a
word boundary: text rendered as ``prompt`` is always a token prefix of ``prompt + answer``
when the answer starts with a space, which answer-only training relies on.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from llavac.labels import LABELS

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"

# Words the tiny models should see as whole tokens. Kept short: a larger corpus only slows
# the (already tiny) training and grows the embedding matrix.
_CORPUS_WORDS = """
USER ASSISTANT SYSTEM User Assistant System user assistant system model
Question Answer Image Text Tweet Post
Classify classify the sentiment of this image and text pair as one of negative neutral
positive Negative Neutral Positive What is overall expressed by tweet post caption given
an a in on at to for with from about by it its is are was were be been not no yes answer
only word label labels multimodal multi modal picture photo photograph describe sentence
Given following determine Respond respond single which options option choose from between
good great happy love lovely wonderful amazing awesome excellent best nice fun beautiful
glad joy joyful excited exciting proud thanks thank win winning success smile perfect cool
bad sad angry hate terrible awful horrible worst poor ugly fear scared sorry pain hurt cry
crying disappointed disappointing annoying annoyed upset lose losing loss fail failure
ok okay fine normal average usual today tomorrow yesterday day night time people news
I you he she we they me my your our their this that these those there here what when where
why how who very so too really just more most less some any all every new old big small
""".split()
_CORPUS_SYMBOLS = list("0123456789.,!?;:'\"()[]{}<>-_/\\@#$%&*+=~`|^") + ["...", "!!", "??"]


def _training_lines() -> list[str]:
    """Corpus lines in which every word occurs both after a space and at a line start."""
    words = _CORPUS_WORDS + list(LABELS) + _CORPUS_SYMBOLS
    lines = [" ".join(words), " ".join(reversed(words))]
    lines += [f"{w}" for w in words] + [f" {w}" for w in words]
    return lines * 4


def build_tokenizer(
    special_tokens: dict[str, str] | None = None,
    extra_tokens: list[str] | None = None,
    vocab_size: int = 4096,
    add_bos: bool = True,
    eos: str = EOS,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    ``special_tokens`` maps processor attribute names to token strings (for example
    ``{"image_token": "<image>"}``); they are registered as ``extra_special_tokens`` so that
    processors can read ``tokenizer.image_token`` / ``tokenizer.image_token_id``.
    ``extra_tokens`` are further atomic strings (row/column markers, turn markers) that must
    never be split. ``add_bos`` prepends ``<s>`` to every encoded text, as Llama does (off
    for processors that place bos themselves). ``eos`` is the token that ends an assistant
    turn in the family's chat format (``<end_of_turn>`` for Gemma, for instance).
    The result is deterministic: the same arguments give the same vocabulary.
    """
    special_tokens = dict(special_tokens or {})
    atomic = [UNK, BOS, eos, PAD]
    for tok in [*special_tokens.values(), *(extra_tokens or [])]:
        if tok not in atomic:
            atomic.append(tok)

    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=atomic,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_lines(), trainer=trainer)
    if add_bos:
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A",
            pair=f"{BOS} $A {BOS} $B",
            special_tokens=[(BOS, bpe.token_to_id(BOS))],
        )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=eos,
        pad_token=PAD,
        extra_special_tokens=special_tokens,
        model_max_length=4096,
    )
    return tokenizer

"""Label scoring: the model's log-likelihood of each label candidate decides, slot by slot.

Why: the answer is ``text, image, multimodal``. Slot ``k`` is decided by the likelihood of
its three candidate answers ``l_1, ..., l_{k-1}, <candidate>``, the earlier slots holding the
labels already chosen (teacher forcing, what greedy decoding conditions on). So scoring
agrees with ``generate`` wherever the generated answer parses, it always yields a valid
label, and it gives probabilities (normalised over each slot's three candidates).

Exactness: a label word may be several tokens (``▁neut ral``), and a word tokenises
differently after a space or at a string start, so whole candidates are scored with the
tokens the tokenizer gives them *in context*: after the prompt's shared ending (the
question's last words and the generation prompt), or after the whole prompt for a row whose
text merges into that ending.

Speed: the prompt runs once with a KV cache (the prefill) and keeps only its last logits,
which score every candidate's first token and, for single-token labels, decide slot 1.
All the longer answers greedy decoding may need then take *one* more forward pass, laid out
as a token trie against the prompt cache (:mod:`llavac.predict.trie`): a pass of a few
tokens costs about one decode step whatever it feeds, so scoring stays cheaper than
generating. The trie's 4-D attention mask needs the ``eager`` or ``sdpa`` attention
implementation (the transformers default).

Prefix LMs (PaliGemma): the prompt is a bidirectional prefix (token type 0) and the answer a
separate causal sequence, passed as the processor's ``suffix=`` exactly as in training
(:mod:`llavac.train.collator`). The prefill gets the batch's ``token_type_ids``; candidates
are tokenised on their own, as a suffix is; positions count from 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch

from llavac.labels import LABELS
from llavac.models import is_prefix_lm
from llavac.predict.batching import PromptBatch, answer_separator, shared_prompt_ending
from llavac.predict.trie import StackedTries, TokenTrie
from llavac.prompt import PromptFormat


def _sliding_window(model) -> int | None:
    """The sliding attention window of a model that has sliding-window layers, else None."""
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    slides = ("sliding_attention" in (getattr(config, "layer_types", None) or ())
              or getattr(config, "use_sliding_window", False))
    return window if window and slides else None


@dataclass
class PrefilledPrompts:
    """The prompts of a batch after one cached forward pass."""

    batch: PromptBatch
    cache: object  # a transformers Cache holding the prompts' keys and values
    next_logprobs: torch.Tensor  # (batch, vocab): log-probs of the first continuation token
    contexts: list[str]  # per row, the text its continuations are tokenised after


class LabelScorer:
    """Scores label candidates for prompt batches of one model, processor and prompt format."""

    def __init__(self, model, processor, fmt: PromptFormat):
        self.model, self.processor, self.fmt = model, processor, fmt
        self.tokenizer = processor.tokenizer
        self.window = _sliding_window(model)
        prefix_lm = is_prefix_lm(model)
        if prefix_lm:  # the answer is its own sequence: tokenised alone, nothing before it
            self.answer_separator = self.prompt_ending = ""
        else:
            self.answer_separator = answer_separator(processor, fmt)  # " " for LLaVA-1.5
            self.prompt_ending = shared_prompt_ending(processor, fmt)
        self.first_position = int(prefix_lm)  # PaliGemma's positions start at 1
        self._ending_ids = self._ids(self.prompt_ending)
        self._after_ending: dict[str, tuple[int, ...]] = {}  # continuation tokens, memoised

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def score(self, batch: PromptBatch) -> list[dict[str, dict[str, float]]]:
        """Per row, ``{slot: {label: probability}}`` for every slot of the format, in order.

        The chosen label of a slot is its most likely candidate; the next slot is scored
        after it. One prefill and at most one continuation pass.
        """
        self._check_attention()
        # Prefill: the prompts once, keeping their cache and next-token log-probs.
        prefilled = self.prefill(batch)
        # Build the continuation: per row, every answer greedy decoding may need, as tokens.
        answers = [self._needed_answers(first) for first in self._first_labels(prefilled)]
        sequences = [tuple(self._answer_ids(context, labels) for labels in row_answers)
                     for context, row_answers in zip(prefilled.contexts, answers, strict=True)]
        # Read the answers' log-likelihoods: one pass over their token trie (or none).
        loglik = self.loglik(prefilled, sequences).cpu()
        # Decide slot by slot, each among the candidates that continue the chosen labels.
        return [self._decide(row_answers, row_loglik)
                for row_answers, row_loglik in zip(answers, loglik, strict=True)]

    def _check_attention(self) -> None:
        """Checked when scoring, not when the scorer is built: the same model can generate."""
        attention = self.model.config.get_text_config()._attn_implementation
        if attention not in ("eager", "sdpa"):
            raise ValueError(
                f"label scoring needs attn_implementation 'sdpa' or 'eager' (its candidate "
                f"tree uses a 4-D attention mask), not {attention!r}; load the model with "
                "attn_implementation='sdpa', or predict with method='generate'"
            )

    @torch.inference_mode()
    def prefill(self, batch: PromptBatch) -> PrefilledPrompts:
        """Run the prompts once; keep their cache and next-token log-probabilities.

        Only the last position's logits are kept (``logits_to_keep=1``): projecting hundreds
        of prompt positions onto the vocabulary is work nobody reads.
        """
        out = self.model(
            **batch.inputs, position_ids=batch.position_ids + self.first_position,
            use_cache=True, logits_to_keep=1,
        )
        next_logprobs = out.logits[:, -1].float().log_softmax(-1)
        return PrefilledPrompts(batch, out.cache, next_logprobs, self._contexts(batch.prompts))

    def _contexts(self, prompts: list[str]) -> list[str]:
        """Per prompt, the text its continuations are tokenised after.

        The shared prompt ending where the prompt's tokens end with exactly the ending's own
        tokens, so a continuation starts at a token boundary both tokenisations share; else
        (a text whose last characters merge into the ending) the whole prompt. Tokenising
        after the short ending matters on small models, where re-tokenising every whole
        prompt per candidate would cost as much as the continuation's forward pass.
        """
        n = len(self._ending_ids)
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return [self.prompt_ending if ids[len(ids) - n :] == self._ending_ids else prompt
                for prompt, ids in zip(prompts, prompt_ids, strict=True)]

    def continuation(self, context: str, text: str) -> tuple[int, ...]:
        """The tokens of ``text`` when it follows ``context`` (tokenised as one string)."""
        if context == self.prompt_ending and text in self._after_ending:
            return self._after_ending[text]
        context_ids, full = self._ids(context), self._ids(context + text)
        if full[: len(context_ids)] != context_ids or len(full) == len(context_ids):
            raise ValueError(
                f"continuation {text!r}: the prompt's tokens are not a strict prefix of "
                "prompt + continuation (the tokenizer merges across the boundary)"
            )
        ids = tuple(full[len(context_ids) :])
        if context == self.prompt_ending:
            self._after_ending[text] = ids
        return ids

    def _answer_ids(self, context: str, labels: tuple[str, ...]) -> tuple[int, ...]:
        """The tokens of the answer giving ``labels`` for the first slots, after ``context``."""
        slots = self.fmt.slots[: len(labels)]
        answer = PromptFormat(slots).answer(dict(zip(slots, labels, strict=True)))
        return self.continuation(context, self.answer_separator + answer)

    def _first_labels(self, prefilled: PrefilledPrompts) -> list[tuple[str, ...]]:
        """Per row, ``(label,)`` where the prefill's logits decide slot 1 (its candidates
        are single tokens, as in every tokenizer the project ships), else ``()``."""
        firsts = [[self._answer_ids(context, (label,)) for label in LABELS]
                  for context in prefilled.contexts]
        first_tokens = torch.tensor([[ids[0] for ids in row] for row in firsts],
                                    device=prefilled.next_logprobs.device)
        best = prefilled.next_logprobs.gather(1, first_tokens).argmax(-1).tolist()
        return [(LABELS[b],) if all(len(ids) == 1 for ids in row) else ()
                for b, row in zip(best, firsts, strict=True)]

    def _needed_answers(self, decided: tuple[str, ...]) -> list[tuple[str, ...]]:
        """The label prefixes greedy decoding may need: the three first labels, then, for
        each later slot, every answer that continues the ``decided`` first label (every
        answer when slot 1 is undecided: 3 + 9 + 27 for the full prompt, instead of 3 + 3 +
        9; at batch 16 on a CPU the extra branches would make scoring slower than generating).
        """
        return [labels for k in range(1, len(self.fmt.slots) + 1)
                for labels in product(LABELS, repeat=k)
                if k == 1 or labels[: len(decided)] == decided]

    def _decide(self, answers: list[tuple[str, ...]],
                loglik: torch.Tensor) -> dict[str, dict[str, float]]:
        """One row's ``{slot: {label: probability}}`` from the log-likelihoods of its
        ``answers``: each slot's softmax over the three candidates after the chosen labels."""
        column = {labels: i for i, labels in enumerate(answers)}
        chosen: tuple[str, ...] = ()
        probabilities = {}
        for slot in self.fmt.slots:
            slot_loglik = loglik[[column[chosen + (label,)] for label in LABELS]]
            probabilities[slot] = dict(zip(LABELS, slot_loglik.softmax(-1).tolist(), strict=True))
            chosen += (LABELS[int(slot_loglik.argmax())],)
        return probabilities

    @torch.inference_mode()
    def loglik(self, prefilled: PrefilledPrompts,
               sequences: list[tuple[tuple[int, ...], ...]]) -> torch.Tensor:
        """``(rows, sequences)`` log-likelihoods of token sequences after each row's prompt;
        a row with fewer sequences than the most is padded with zeros.

        At most one forward pass against the prompt cache; the cache is left as it was found.
        """
        distinct = {key: i for i, key in enumerate(dict.fromkeys(sequences))}  # rows share tries
        stacked = StackedTries.stack([TokenTrie.build(key) for key in distinct],
                                     self.tokenizer.pad_token_id or 0)
        device = prefilled.batch.attention_mask.device
        tries = stacked.select(torch.tensor([distinct[key] for key in sequences]), device)
        logprobs = prefilled.next_logprobs[:, None]  # output 0: the prefill's
        if tries.width:  # some node has children: outputs 1.. are the trie inputs'
            logprobs = torch.cat([logprobs, self._trie_pass(prefilled, tries)], dim=1)
        rows = torch.arange(len(sequences), device=device)[:, None]
        token_logprobs = logprobs[rows, tries.read_from, tries.tokens]
        return (tries.on_path * token_logprobs[:, None]).sum(-1)

    def _trie_pass(self, prefilled: PrefilledPrompts, tries: StackedTries) -> torch.Tensor:
        """``(rows, inputs, vocab)`` log-probs after each trie input, from one pass against
        the prompt cache: the 4-D mask lets each input see the prompt and its own ancestors,
        and its position continues the prompt's along its branch (answer tokens are text: with
        M-RoPE their three positions are equal, which 2-D position ids say)."""
        batch, width = prefilled.batch, tries.width
        self._check_window(batch.attention_mask.shape[1], width)
        prompt = batch.attention_mask.bool()[:, None, :].expand(-1, width, -1)
        allowed = torch.cat([prompt, tries.attends_to], dim=-1)[:, None]
        mask = torch.zeros(allowed.shape, dtype=self.model.dtype, device=allowed.device)
        mask.masked_fill_(~allowed, torch.finfo(self.model.dtype).min)
        try:
            out = self.model(
                input_ids=tries.inputs,
                attention_mask=mask,
                position_ids=self.first_position + batch.next_positions[:, None] + tries.depths,
                cache=prefilled.cache,
                use_cache=True,
            )
        finally:  # the cache holds the prompt alone again, whatever happened
            prefilled.cache.crop(-width)
        return out.logits.float().log_softmax(-1)

    def _check_window(self, prompt_length: int, width: int) -> None:
        """Sliding-window layers keep only the last window keys, so the trie's mask could not
        see the whole prompt (Gemma3: 1,024 positions, 256 of them image)."""
        if self.window and prompt_length + width >= self.window:
            raise ValueError(
                f"a prompt of {prompt_length} tokens plus {width} answer tokens reaches the "
                f"model's sliding attention window ({self.window}): shorten the text, or "
                "predict with method='generate'"
            )

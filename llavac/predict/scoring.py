"""Label scoring: the model's log-likelihood of each label candidate decides, slot by slot.

The answer is ``text, image, multimodal`` (or one slot for the multimodal-only prompt). Slot
``k`` is decided by the likelihood of the three candidate continuations
``prompt + lead + l_1, ..., l_{k-1}, <candidate>``, where ``l_1 .. l_{k-1}`` are the labels
already chosen for the earlier slots (teacher forcing). This is what greedy decoding
conditions on, so ``score`` and ``generate`` agree wherever the generated answer parses (up
to a label of several tokens, where greedy decoding commits to the first token and scoring
weighs the whole word), and it always yields a valid label, with probabilities normalised
over the three candidates of each slot.

Exactness: a label word may be several tokens (``▁neut ral`` in Llama's tokenizer), and a
word can tokenise differently after a space or at a string start. Whole candidate sequences
are scored, and a candidate's tokens are those the tokenizer gives it *in context*: the
continuation is tokenised after the prompt's fixed tail (the question after the pair's text
and the generation prompt, the same for every row) and taken as the difference to the
tail's own tokens. Each row's prompt tokens are checked to end with exactly the tail's
tokens, so the continuation starts at a token boundary that the prompt's tokenisation
shares; a row where they do not (a text whose last characters merge into the tail) is
tokenised with its whole prompt instead. Tokenising after the short tail rather than after
every whole prompt matters on small models, where re-tokenising hundreds of characters per
candidate would cost as much as the continuation's forward pass.

Speed: the prompt (hundreds of tokens with the image) runs once with a KV cache and keeps
only its last position's logits (``logits_to_keep=1``: projecting hundreds of prompt
positions onto a 32k vocabulary is work nobody reads); they give the log-prob of every
candidate's first token. Everything after that takes at most *one* more forward pass,
because a pass of a few tokens reads every weight and so costs about one decode step
whatever it feeds: per-slot passes would make scoring a full answer as slow as generating it.

- The answers greedy decoding may need are known in advance: for slot ``k``, every choice
  of the earlier labels followed by each candidate (3 + 9 + 27 for the full prompt). Where
  the first slot's candidates are single tokens (every tokenizer the project ships), the
  prefill's logits decide it before the pass, and only the branch of that choice is
  enumerated: the 3 first labels, the 3 answers ``l_1, l_2`` and the 9 answers
  ``l_1, l_2, l_3``. Once a batch fills the pass its cost grows with the tokens fed, and
  every ``l_1`` branch would feed three times as many (at batch 16 on a CPU, enough to make
  scoring slower than generating).
- A row's answers are laid out as a token trie (shared prefixes appear once) and only its
  inner nodes are fed: a leaf's output predicts nothing anyone reads. A node's log-prob is
  read from its parent's output, or from the prefill's for a node right after the prompt.
  For the full prompt that is ``l_1 ,`` and three ``l_2 ,`` (8 tokens a row, 24 without the
  pruning above); single-token candidates of the multimodal-only prompt have no inner node,
  and the pass is skipped.
- The pass runs against the prompt cache with a 4-D attention mask in which each token sees
  the prompt and its own ancestors, and position ids that continue the prompt's along every
  branch. The cache is therefore never copied per branch (copies of a 7B model's prompt
  cache would cost gigabytes); afterwards it is cropped back to the prompt.
- Then the slots are decided greedily from the pass's log-likelihoods: slot 1 over the
  three first labels, slot ``k`` among the answers that continue the chosen labels.

Custom 4-D masks need the ``eager`` or ``sdpa`` attention implementation (the transformers
default).

Prefix LMs (PaliGemma): the image and the prompt attend bidirectionally (token type 0) and
the answer is a separate, causal sequence (token type 1), passed as the processor's
``suffix=`` exactly as in training (:mod:`llavac.train.collator`). The prompt pass gets
the batch's ``token_type_ids`` (all 0), so the cache holds the bidirectional prefix; the
candidates are tokenised on their own as the suffix is (no lead, no tail: the processor
ends the prompt with its own newline), and the tree mask already makes them causal among
themselves with full attention to the prefix. PaliGemma counts positions from 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch

from llavac.labels import LABELS
from llavac.models import is_prefix_lm
from llavac.predict.batching import PromptBatch, answer_lead, prompt_tail
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
    anchors: list[str]  # per row, the text continuations are tokenised after


@dataclass
class _Tree:
    """One row's token sequences as a trie (a parent precedes its children).

    Only the nodes with children are fed to the model; they are its columns, in node order.
    """

    tokens: list[int]  # per node
    sources: list[int]  # per node, where its log-prob is read: 0 prefill, c + 1 column c
    paths: list[list[int]]  # per sequence, its nodes
    fed: list[int]  # per column, its token
    sees: list[list[int]]  # per column, the columns it attends to (its ancestors and itself)

    @classmethod
    def build(cls, sequences: tuple[tuple[int, ...], ...]) -> _Tree:
        index: dict[tuple[int, ...], int] = {}
        tokens: list[int] = []
        parents: list[int] = []
        paths = []
        for sequence in sequences:
            path, parent = [], -1
            for depth, token in enumerate(sequence):
                key = sequence[: depth + 1]
                if key not in index:
                    index[key] = len(tokens)
                    tokens.append(token)
                    parents.append(parent)
                parent = index[key]
                path.append(parent)
            paths.append(path)
        inner = sorted(set(parents) - {-1})
        column = {node: c for c, node in enumerate(inner)}
        sees: list[list[int]] = []
        for c, node in enumerate(inner):  # a parent's column precedes its children's
            parent = parents[node]
            sees.append([*(sees[column[parent]] if parent >= 0 else []), c])
        sources = [0 if parent < 0 else column[parent] + 1 for parent in parents]
        return cls(tokens, sources, paths, [tokens[node] for node in inner], sees)


def _stack_trees(trees: list[_Tree], pad_id: int) -> dict[str, torch.Tensor]:
    """The trees padded to one size: a padding column sees only itself, a padding node lies
    on no path, a padding sequence has no node."""
    width = max(len(tree.fed) for tree in trees)
    nodes = max(len(tree.tokens) for tree in trees)
    sequences = max(len(tree.paths) for tree in trees)
    stacked = {
        "fed": torch.full((len(trees), width), pad_id, dtype=torch.long),
        "depths": torch.zeros((len(trees), width), dtype=torch.long),
        "sees": torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1),
        "tokens": torch.zeros((len(trees), nodes), dtype=torch.long),
        "sources": torch.zeros((len(trees), nodes), dtype=torch.long),
        "on_path": torch.zeros((len(trees), sequences, nodes)),
    }
    for i, tree in enumerate(trees):
        n = len(tree.tokens)
        stacked["tokens"][i, :n] = torch.tensor(tree.tokens)
        stacked["sources"][i, :n] = torch.tensor(tree.sources)
        for c, seen in enumerate(tree.sees):
            stacked["fed"][i, c] = tree.fed[c]
            stacked["depths"][i, c] = len(seen) - 1
            stacked["sees"][i, c, seen] = True
        for sequence, path in enumerate(tree.paths):
            stacked["on_path"][i, sequence, path] = 1.0
    return stacked


class LabelScorer:
    """Scores label candidates for prompt batches of one model, processor and prompt format."""

    def __init__(self, model, processor, fmt: PromptFormat):
        self.model, self.processor, self.fmt = model, processor, fmt
        self.tokenizer = processor.tokenizer
        self.window = _sliding_window(model)
        prefix_lm = is_prefix_lm(model)
        if prefix_lm:  # the answer is its own sequence: tokenised alone, nothing before it
            self.lead = self.tail = ""
        else:
            self.lead = answer_lead(processor, fmt)
            self.tail = prompt_tail(processor, fmt)
        self.first_position = int(prefix_lm)  # PaliGemma's positions start at 1
        self._tail_ids = self._ids(self.tail)
        self._after_tail: dict[str, tuple[int, ...]] = {}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def prefill(self, batch: PromptBatch) -> PrefilledPrompts:
        """Run the prompts once; keep their cache and next-token log-probabilities."""
        out = self.model(
            **batch.inputs, position_ids=batch.position_ids + self.first_position,
            use_cache=True, logits_to_keep=1,
        )
        next_logprobs = out.logits[:, -1].float().log_softmax(-1)
        n_tail = len(self._tail_ids)
        anchors = [
            self.tail if ids[len(ids) - n_tail :] == self._tail_ids else prompt
            for prompt, ids in zip(
                batch.prompts, self.tokenizer(batch.prompts, add_special_tokens=False)[
                    "input_ids"], strict=True
            )
        ]
        return PrefilledPrompts(batch, out.cache, next_logprobs, anchors)

    def _continuation(self, anchor: str, text: str) -> tuple[int, ...]:
        """The tokens of ``text`` when it follows ``anchor`` (tokenised as one string)."""
        if anchor == self.tail and text in self._after_tail:
            return self._after_tail[text]
        anchor_ids, full = self._ids(anchor), self._ids(anchor + text)
        if full[: len(anchor_ids)] != anchor_ids or len(full) == len(anchor_ids):
            raise ValueError(
                f"continuation {text!r}: the prompt's tokens are not a strict prefix of "
                "prompt + continuation (the tokenizer merges across the boundary)"
            )
        ids = tuple(full[len(anchor_ids) :])
        if anchor == self.tail:
            self._after_tail[text] = ids
        return ids

    def _answer(self, anchor: str, labels: tuple[str, ...]) -> tuple[int, ...]:
        """The tokens of the answer giving ``labels`` for the first slots, after ``anchor``."""
        slots = self.fmt.slots[: len(labels)]
        text = self.lead + PromptFormat(slots).answer(dict(zip(slots, labels, strict=True)))
        return self._continuation(anchor, text)

    @torch.inference_mode()
    def loglik(self, prefilled: PrefilledPrompts, texts: list[list[str]]) -> torch.Tensor:
        """``(rows, candidates)`` log-likelihoods of ``texts[row][c]`` after the row's prompt.

        Every row has the same number of candidates. At most one forward pass against the
        prompt cache; the cache is left as it was found.
        """
        return self._loglik_ids(prefilled, [
            tuple(self._continuation(anchor, text) for text in row)
            for anchor, row in zip(prefilled.anchors, texts, strict=True)
        ])

    def _loglik_ids(self, prefilled: PrefilledPrompts,
                    sequences: list[tuple[tuple[int, ...], ...]]) -> torch.Tensor:
        """``(rows, sequences)`` log-likelihoods of token sequences after each row's prompt;
        a row with fewer sequences than the most is padded with zeros."""
        distinct = {key: i for i, key in enumerate(dict.fromkeys(sequences))}
        trees = _stack_trees([_Tree.build(key) for key in distinct], self.tokenizer.pad_token_id
                             or 0)
        batch = prefilled.batch
        device = batch.attention_mask.device
        row_tree = torch.tensor([distinct[key] for key in sequences])
        tree = {name: value[row_tree].to(device) for name, value in trees.items()}
        rows, width = tree["fed"].shape

        logprobs = prefilled.next_logprobs[:, None]
        if width and self.window and batch.attention_mask.shape[1] + width >= self.window:
            # Sliding-window layers keep only the last window keys, so the tree's mask
            # cannot see the whole prompt (Gemma3: 1,024 positions, 256 of them image).
            raise ValueError(
                f"a prompt of {batch.attention_mask.shape[1]} tokens plus {width} answer "
                f"tokens reaches the model's sliding attention window ({self.window}): "
                "shorten the text, or predict with method='generate'"
            )
        if width:  # some node has children: feed the inner nodes once
            prompt_cols = batch.attention_mask.bool()[:, None, :].expand(-1, width, -1)
            allowed = torch.cat([prompt_cols, tree["sees"]], dim=-1)[:, None]
            mask = torch.zeros(allowed.shape, dtype=self.model.dtype, device=device)
            mask.masked_fill_(~allowed, torch.finfo(self.model.dtype).min)
            try:
                out = self.model(
                    input_ids=tree["fed"],
                    attention_mask=mask,
                    position_ids=self.first_position + batch.lengths[:, None] + tree["depths"],
                    cache=prefilled.cache,
                    use_cache=True,
                )
            finally:  # the cache holds the prompt alone again, whatever happened
                prefilled.cache.crop(-width)
            logprobs = torch.cat([logprobs, out.logits.float().log_softmax(-1)], dim=1)

        rows_index = torch.arange(rows, device=device)[:, None]
        token_logprobs = logprobs[rows_index, tree["sources"], tree["tokens"]]
        return (tree["on_path"] * token_logprobs[:, None]).sum(-1)

    @torch.inference_mode()
    def score(self, batch: PromptBatch) -> list[dict[str, dict[str, float]]]:
        """Per row, ``{slot: {label: probability}}`` for every slot of the format, in order.

        The chosen label of a slot is its most likely candidate; the next slot is scored
        after it. One prefill and at most one continuation pass (see the module docstring).
        """
        # Checked here, not when the scorer is built: the same model can still generate.
        attention = self.model.config.get_text_config()._attn_implementation
        if attention not in ("eager", "sdpa"):
            raise ValueError(
                f"label scoring needs attn_implementation 'sdpa' or 'eager' (its candidate "
                f"tree uses a 4-D attention mask), not {attention!r}; load the model with "
                "attn_implementation='sdpa', or predict with method='generate'"
            )
        prefilled = self.prefill(batch)
        rows = range(len(batch.prompts))
        # Slot 1 is decided by the prefill's logits in every row whose candidates for it
        # are single tokens; the answers after another first label are then never needed.
        firsts = [[self._answer(anchor, (label,)) for label in LABELS]
                  for anchor in prefilled.anchors]
        first_tokens = torch.tensor([[ids[0] for ids in row] for row in firsts],
                                    device=prefilled.next_logprobs.device)
        first_best = prefilled.next_logprobs.gather(1, first_tokens).argmax(-1).tolist()
        decided = [
            (LABELS[best],) if all(len(ids) == 1 for ids in row) else ()
            for best, row in zip(first_best, firsts, strict=True)
        ]
        answers = [
            [labels for k in range(1, len(self.fmt.slots) + 1)
             for labels in product(LABELS, repeat=k)
             if k == 1 or labels[: len(decided[row])] == decided[row]]
            for row in rows
        ]
        loglik = self._loglik_ids(prefilled, [
            tuple(self._answer(anchor, labels) for labels in row_answers)
            for anchor, row_answers in zip(prefilled.anchors, answers, strict=True)
        ]).cpu()

        column = [{labels: i for i, labels in enumerate(row_answers)} for row_answers in answers]
        chosen: list[tuple[str, ...]] = [() for _ in rows]
        probabilities: list[dict[str, dict[str, float]]] = [{} for _ in rows]
        for slot in self.fmt.slots:
            candidates = torch.tensor([[column[row][chosen[row] + (label,)] for label in LABELS]
                                       for row in rows])
            slot_loglik = loglik.gather(1, candidates)
            best = slot_loglik.argmax(-1).tolist()
            for row, probs in enumerate(slot_loglik.softmax(-1).tolist()):
                probabilities[row][slot] = dict(zip(LABELS, probs, strict=True))
                chosen[row] += (LABELS[best[row]],)
        return probabilities

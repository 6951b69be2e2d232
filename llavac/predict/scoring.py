"""Label scoring: the model's log-likelihood of each label candidate decides, slot by slot.

The answer is ``text, image, multimodal`` (or one slot for the multimodal-only prompt). Slot
``k`` is decided by the likelihood of the three candidate continuations
``prompt + lead + l_1, ..., l_{k-1}, <candidate>``, where ``l_1 .. l_{k-1}`` are the labels
already chosen for the earlier slots (teacher forcing). This is what greedy decoding
conditions on, so ``score`` and ``generate`` agree wherever the generated answer parses (up
to a label of several tokens, where greedy decoding commits to the first token and scoring
weighs the whole word), and it always yields a valid label, with probabilities normalised over the three candidates of
each slot. Scoring all 27 joint answers instead would cost nine times more continuation work
for a decision the paper does not make (it decodes greedily).

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

Speed: the prompt (hundreds of tokens with the image) runs once with a KV cache; each slot
then runs only its short continuations against that cache, in one forward pass per slot.
A row's candidates are laid out as a token trie in that row (shared prefixes such as the
earlier labels appear once) with a 4-D attention mask in which each token sees the prompt
and its own ancestors, and position ids that continue the prompt's along every branch.
The cache is therefore never copied per candidate (three copies of a 7B model's prompt
cache would cost gigabytes); after each slot it is cropped back to the prompt. The prompt
pass keeps only the last position's logits (``logits_to_keep=1``): projecting hundreds of
prompt positions onto a 32k vocabulary is work nobody reads. Custom 4-D masks need the
``eager`` or ``sdpa`` attention implementation (the transformers default).

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

import torch

from llavac.labels import LABELS
from llavac.models import is_prefix_lm
from llavac.predict.batching import PromptBatch, answer_lead, prompt_tail
from llavac.prompt import PromptFormat


@dataclass
class PrefilledPrompts:
    """The prompts of a batch after one cached forward pass."""

    batch: PromptBatch
    cache: object  # a transformers Cache holding the prompts' keys and values
    next_logprobs: torch.Tensor  # (batch, vocab): log-probs of the first continuation token
    anchors: list[str]  # per row, the text continuations are tokenised after


@dataclass
class _Tree:
    """One row's candidate token sequences as a trie (a parent precedes its children)."""

    tokens: list[int]
    depths: list[int]  # 0 for a token right after the prompt
    sources: list[int]  # where the logits predicting the token are: 0 prompt, n + 1 node n
    sees: list[list[int]]  # per node, the nodes it attends to (its ancestors and itself)
    paths: list[list[int]]  # per candidate, its nodes

    @classmethod
    def build(cls, sequences: tuple[tuple[int, ...], ...]) -> _Tree:
        index: dict[tuple[int, ...], int] = {}
        tree = cls([], [], [], [], [])
        for sequence in sequences:
            path, parent = [], -1
            for depth, token in enumerate(sequence):
                key = sequence[: depth + 1]
                if key not in index:
                    index[key] = len(tree.tokens)
                    tree.tokens.append(token)
                    tree.depths.append(depth)
                    tree.sources.append(parent + 1)
                    tree.sees.append([*(tree.sees[parent] if parent >= 0 else []), index[key]])
                parent = index[key]
                path.append(parent)
            tree.paths.append(path)
        return tree


def _stack_trees(trees: list[_Tree], pad_id: int) -> dict[str, torch.Tensor]:
    """The trees padded to one width: padding nodes see only themselves and lie on no path."""
    width = max(len(tree.tokens) for tree in trees)
    n_candidates = len(trees[0].paths)
    stacked = {
        "tokens": torch.full((len(trees), width), pad_id, dtype=torch.long),
        "depths": torch.zeros((len(trees), width), dtype=torch.long),
        "sources": torch.zeros((len(trees), width), dtype=torch.long),
        "sees": torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1),
        "on_path": torch.zeros((len(trees), n_candidates, width)),
    }
    for i, tree in enumerate(trees):
        n = len(tree.tokens)
        stacked["tokens"][i, :n] = torch.tensor(tree.tokens)
        stacked["depths"][i, :n] = torch.tensor(tree.depths)
        stacked["sources"][i, :n] = torch.tensor(tree.sources)
        for node, seen in enumerate(tree.sees):
            stacked["sees"][i, node, seen] = True
        for candidate, path in enumerate(tree.paths):
            stacked["on_path"][i, candidate, path] = 1.0
    return stacked


class LabelScorer:
    """Scores label candidates for prompt batches of one model, processor and prompt format."""

    def __init__(self, model, processor, fmt: PromptFormat):
        self.model, self.processor, self.fmt = model, processor, fmt
        self.tokenizer = processor.tokenizer
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

    @torch.inference_mode()
    def loglik(self, prefilled: PrefilledPrompts, texts: list[list[str]]) -> torch.Tensor:
        """``(rows, candidates)`` log-likelihoods of ``texts[row][c]`` after the row's prompt.

        Every row has the same number of candidates. One forward pass over the candidate
        tries against the prompt cache; the cache is left as it was found.
        """
        keys = [
            tuple(self._continuation(anchor, text) for text in row)
            for anchor, row in zip(prefilled.anchors, texts, strict=True)
        ]
        distinct = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        trees = _stack_trees([_Tree.build(key) for key in distinct], self.tokenizer.pad_token_id
                             or 0)
        batch = prefilled.batch
        device = batch.attention_mask.device
        row_tree = torch.tensor([distinct[key] for key in keys])
        tree = {name: value[row_tree].to(device) for name, value in trees.items()}
        rows, width = tree["tokens"].shape

        prompt_cols = batch.attention_mask.bool()[:, None, :].expand(-1, width, -1)
        allowed = torch.cat([prompt_cols, tree["sees"]], dim=-1)[:, None]
        mask = torch.zeros(allowed.shape, dtype=self.model.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(self.model.dtype).min)
        out = self.model(
            input_ids=tree["tokens"],
            attention_mask=mask,
            position_ids=self.first_position + batch.lengths[:, None] + tree["depths"],
            cache=prefilled.cache,
            use_cache=True,
        )
        prefilled.cache.crop(-width)

        logprobs = torch.cat(
            [prefilled.next_logprobs[:, None], out.logits.float().log_softmax(-1)], dim=1
        )
        rows_index = torch.arange(rows, device=device)[:, None]
        token_logprobs = logprobs[rows_index, tree["sources"], tree["tokens"]]
        return (tree["on_path"] * token_logprobs[:, None]).sum(-1)

    def score(self, batch: PromptBatch) -> list[dict[str, dict[str, float]]]:
        """Per row, ``{slot: {label: probability}}`` for every slot of the format, in order.

        The chosen label of a slot is its most likely candidate; the next slot is scored
        after it.
        """
        prefilled = self.prefill(batch)
        rows = len(batch.prompts)
        chosen: list[dict[str, str]] = [{} for _ in range(rows)]
        probabilities: list[dict[str, dict[str, float]]] = [{} for _ in range(rows)]
        for k, slot in enumerate(self.fmt.slots):
            partial = PromptFormat(self.fmt.slots[: k + 1])  # the answer up to this slot
            texts = [
                [self.lead + partial.answer({**chosen[row], slot: label}) for label in LABELS]
                for row in range(rows)
            ]
            loglik = self.loglik(prefilled, texts)
            best = loglik.argmax(-1).tolist()
            for row, probs in enumerate(loglik.softmax(-1).tolist()):
                probabilities[row][slot] = dict(zip(LABELS, probs, strict=True))
                chosen[row][slot] = LABELS[best[row]]
        return probabilities

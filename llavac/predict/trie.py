"""Token tries: many answers after one prompt, scored in a single forward pass.

Label scoring needs the log-likelihood of several token sequences after the same prompt
(``positive``, ``positive ,  neutral``, ...). They share prefixes, so they are laid out as a
trie in which each shared prefix appears once. To score every sequence, the model has to see
only the trie's *inner* nodes (those with children): a node's log-prob is read from the output
at its parent, and a leaf's output predicts nothing that is read. The root's children are read
from the prompt's own last output (the prefill).

The inner nodes become the *inputs* of one forward pass against the prompt's KV cache. Each
input attends to the prompt and to its own ancestors in the trie (never to a sibling
branch) and sits at the position that continues the prompt along its branch, so every
branch sees exactly what it would see if it were fed alone, and the cache is never copied
per branch.

For the sequences ``a b x``, ``a b y`` and ``a c`` the trie has the nodes ``a b x y c``; the
inputs are ``a`` and ``b``: ``a`` is read from the prefill, ``b`` and ``c`` from the output at
``a``, ``x`` and ``y`` from the output at ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenTrie:
    """One row's token sequences as a trie; a parent always precedes its children."""

    tokens: list[int]  # per node, its token
    read_from: list[int]  # per node, the output that predicts it: 0 the prefill, i + 1 input i
    paths: list[list[int]]  # per sequence, its nodes from first to last token
    inputs: list[int]  # per input (an inner node, in node order), its token
    attends_to: list[list[int]]  # per input, the inputs it attends to: its ancestors and itself

    @classmethod
    def build(cls, sequences: tuple[tuple[int, ...], ...]) -> TokenTrie:
        index: dict[tuple[int, ...], int] = {}  # prefix -> its node
        tokens: list[int] = []
        parents: list[int] = []  # per node, its parent node (-1: a child of the root)
        paths = []
        for sequence in sequences:
            path, parent = [], -1
            for depth, token in enumerate(sequence):
                prefix = sequence[: depth + 1]
                if prefix not in index:
                    index[prefix] = len(tokens)
                    tokens.append(token)
                    parents.append(parent)
                parent = index[prefix]
                path.append(parent)
            paths.append(path)
        inner = sorted(set(parents) - {-1})
        input_of = {node: i for i, node in enumerate(inner)}
        attends_to: list[list[int]] = []
        for i, node in enumerate(inner):  # a parent's input precedes its children's
            parent = parents[node]
            attends_to.append([*(attends_to[input_of[parent]] if parent >= 0 else []), i])
        read_from = [0 if parent < 0 else input_of[parent] + 1 for parent in parents]
        return cls(tokens, read_from, paths, [tokens[node] for node in inner], attends_to)


@dataclass
class StackedTries:
    """Tries padded to one size, as tensors. A padding input attends only to itself, a
    padding node lies on no path, a padding sequence has no node."""

    inputs: torch.Tensor  # (tries, inputs): the tokens to feed
    depths: torch.Tensor  # (tries, inputs): each input's depth, to continue the positions
    attends_to: torch.Tensor  # (tries, inputs, inputs) bool: the trie part of the mask
    tokens: torch.Tensor  # (tries, nodes): each node's token
    read_from: torch.Tensor  # (tries, nodes): see ``TokenTrie.read_from``
    on_path: torch.Tensor  # (tries, sequences, nodes): 1.0 where a node is on a sequence

    @classmethod
    def stack(cls, tries: list[TokenTrie], pad_id: int) -> StackedTries:
        width = max(len(trie.inputs) for trie in tries)
        nodes = max(len(trie.tokens) for trie in tries)
        sequences = max(len(trie.paths) for trie in tries)
        stacked = cls(
            inputs=torch.full((len(tries), width), pad_id, dtype=torch.long),
            depths=torch.zeros((len(tries), width), dtype=torch.long),
            attends_to=torch.eye(width, dtype=torch.bool).repeat(len(tries), 1, 1),
            tokens=torch.zeros((len(tries), nodes), dtype=torch.long),
            read_from=torch.zeros((len(tries), nodes), dtype=torch.long),
            on_path=torch.zeros((len(tries), sequences, nodes)),
        )
        for t, trie in enumerate(tries):
            n = len(trie.tokens)
            stacked.tokens[t, :n] = torch.tensor(trie.tokens)
            stacked.read_from[t, :n] = torch.tensor(trie.read_from)
            for i, ancestors in enumerate(trie.attends_to):
                stacked.inputs[t, i] = trie.inputs[i]
                stacked.depths[t, i] = len(ancestors) - 1
                stacked.attends_to[t, i, ancestors] = True
            for sequence, path in enumerate(trie.paths):
                stacked.on_path[t, sequence, path] = 1.0
        return stacked

    def select(self, rows: torch.Tensor, device) -> StackedTries:
        """The tries of ``rows`` (indices into the stack, repeats allowed) on ``device``."""
        return StackedTries(**{name: value[rows].to(device) for name, value in vars(self).items()})

    @property
    def width(self) -> int:
        """Inputs per row: 0 when no trie has an inner node (no pass is needed)."""
        return self.inputs.shape[1]

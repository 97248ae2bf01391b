"""Specialise a torch.jit trace to the shapes it was recorded with.

A trace keeps its shape arithmetic as ops (`x.shape[1]` becomes aten::size -> NumToTensor -> Int, ...) and every
`.to(dtype)` or full slice `x[:, :k]` that was a no-op when recorded, so that it would still run for other shapes.
The step replays one layout forever (`StreamingGenerator` keys its traces on the batch size and checks the state's
layout), so those ops are dead weight: a tiny CPU step's trace held 3.4k size ops, 1k no-op casts and 1k full
slices, and dropping them took 6-9 % off the replay (`benchmarks/README.md`).

What folds, each only where the recorded types say it was exact:
- aten::size(x, dim) with x's sizes known: the recorded size, then constant propagation folds the arithmetic;
- aten::to with copy=False whose output type equals its input's (dtype, device, sizes, strides): the input;
- aten::slice with step 1 over a whole dim (start 0, end >= size), all constants: the input.
Fork subgraphs (model/parallel.py) fold too. The unspecialised trace stays the reference (tests/model).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

FOLDED = ("aten::size", "aten::to", "aten::slice")


def _nodes(graph: torch._C.Graph) -> list[torch._C.Node]:
    """Every node of the graph, those inside its blocks included (not those of fork subgraphs)."""
    out, stack = [], [graph.block()]
    while stack:
        for node in stack.pop().nodes():
            out.append(node)
            stack.extend(node.blocks())
    return out


def _graphs(graph: torch._C.Graph) -> Iterator[torch._C.Graph]:
    """The graph and every fork subgraph below it."""
    yield graph
    for node in _nodes(graph):
        if node.kind() == "prim::fork":
            yield from _graphs(node.g("Subgraph"))


def _deep_copy(graph: torch._C.Graph) -> torch._C.Graph:
    """Graph.copy() shares fork subgraphs with the original; give the copy its own."""
    out = graph.copy()
    for node in _nodes(out):
        if node.kind() == "prim::fork":
            node.g_("Subgraph", _deep_copy(node.g("Subgraph")))
    return out


def _constants(node: torch._C.Node, first: int) -> list | None:
    """The node's inputs from `first` on as Python values, or None if any is not a constant."""
    ins = list(node.inputs())[first:]
    if any(v.node().kind() != "prim::Constant" for v in ins):
        return None
    return [v.toIValue() for v in ins]


def _same_type(a: torch._C.Value, b: torch._C.Value) -> bool:
    ta, tb = a.type(), b.type()
    if not (isinstance(ta, torch._C.TensorType) and isinstance(tb, torch._C.TensorType)):
        return False
    keys = (ta.scalarType(), ta.device(), ta.sizes(), ta.strides())
    return None not in keys and keys == (tb.scalarType(), tb.device(), tb.sizes(), tb.strides())


def _fold_node(graph: torch._C.Graph, node: torch._C.Node) -> bool:
    kind = node.kind()
    args = _constants(node, 1) if kind in FOLDED else None   # every input after the tensor must be a constant
    if args is None:
        return False
    src = node.inputsAt(0)
    sizes = src.type().sizes() if isinstance(src.type(), torch._C.TensorType) else None
    if kind == "aten::size":
        if len(args) != 1 or sizes is None or sizes[args[0]] is None:
            return False
        with graph.insert_point_guard(node):
            node.output().replaceAllUsesWith(graph.insertConstant(int(sizes[args[0]])))
    elif kind == "aten::to":
        if node.namedInput("copy").toIValue() is not False or not _same_type(src, node.output()):
            return False
        node.output().replaceAllUsesWith(src)
    else:  # aten::slice(self, dim, start, end, step)
        if len(args) != 4 or sizes is None:
            return False
        dim, start, end, step = args
        if step != 1 or start not in (None, 0) or sizes[dim] is None or not (end is None or end >= sizes[dim]):
            return False
        node.output().replaceAllUsesWith(src)
    node.destroy()
    return True


def specialize_graph(graph: torch._C.Graph) -> int:
    """Fold the ops above in place (every fork subgraph included); returns how many were folded."""
    folded = 0
    for sub in list(_graphs(graph)):
        for node in _nodes(sub):
            folded += _fold_node(sub, node)
        torch._C._jit_pass_constant_propagation(sub)
        torch._C._jit_pass_dce(sub)
    return folded


def specialize(fn: torch.jit.ScriptFunction, name: str = "specialized") -> torch.jit.ScriptFunction:
    """A new function: `fn`'s graph with the ops above folded. `fn` itself is left as it was."""
    graph = _deep_copy(fn.graph)
    specialize_graph(graph)
    return torch._C._create_function_from_graph(name, graph)


def count_nodes(graph: torch._C.Graph, kinds: tuple[str, ...] = FOLDED) -> int:
    """How many nodes of `kinds` the graph and its fork subgraphs hold."""
    return sum(node.kind() in kinds for sub in _graphs(graph) for node in _nodes(sub))

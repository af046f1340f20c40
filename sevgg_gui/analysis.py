"""Parameter and FLOP analysis: the article's section 5.2 table, computed from the model itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .taps import AttentionBlock


@dataclass
class BlockCost:
    name: str
    channels: int
    hidden: int
    params: int
    spatial: tuple[int, int]
    macs: int  # multiply-accumulates: its layers (torch's FLOP counter) + squeeze sum + scale
    share: float  # of the whole model's parameters
    kind: str = "se"  # the registry's kind: se, eca, cbam-spatial, unknown-gate, ...
    found_by: str = "type"  # "type" (registered) or "behaviour" (the probe)
    recorded: bool = True  # False: attention listed but not a per-channel gate (split attention...)
    note: str = ""  # what is shown, or why nothing is


@dataclass
class ModelCost:
    total_params: int
    attention_params: int
    total_macs: int
    attention_macs: int
    blocks: list[BlockCost]
    input_size: tuple[int, int]

    @property
    def attention_share(self) -> float:
        return self.attention_params / self.total_params if self.total_params else 0.0


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class LayerShapes:
    total_macs: int  # multiply-accumulates for one image, from torch's FLOP counter (FLOPs / 2)
    macs: dict[str, int]  # module name -> MACs of that module's calls, its submodules included
    inputs: dict[str, tuple[int, ...]]  # module name -> input shape without the batch


def meta_copy(model: nn.Module) -> nn.Module:
    """The same module tree with every parameter and buffer on the ``meta`` device (no memory, no
    copy of the weights), for shape analysis that must not touch a model another thread is running.

    Hooks are shared with the original (functions are not copied); the recorder's hooks ignore meta
    tensors. Take the copy between forwards: a forward may temporarily patch modules (CpuFastPath).
    """
    import copy

    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _counting(counter: object) -> object:
    """The counter's dispatch mode alone, without ``FlopCounterMode``'s module tracker: that tracker
    registers *global* module hooks, which would also fire in the inference thread's forward while
    the app costs a meta copy on a helper thread (and switch its CPU fast path off meanwhile). The
    dispatch mode is thread-local; totals land in "Global" as usual. Falls back to the public
    context where torch's private class is absent."""
    from torch.utils import flop_counter

    mode = getattr(flop_counter, "_FlopCounterMode", None)
    if mode is None:
        return counter
    counter.flop_counts.clear()  # type: ignore[attr-defined]
    return mode(counter)


def layer_macs(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> LayerShapes:
    """MACs for one image, in total and per module, and each module's input shape.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (every convolution, matrix product and
    attention kernel torch dispatches, whatever the architecture; 2 FLOPs = 1 MAC), on the ``meta``
    device: shapes only, no memory or compute.
    """
    from torch.utils import flop_counter

    counter = flop_counter.FlopCounterMode(display=False)
    macs: dict[str, int] = {}
    inputs: dict[str, tuple[int, ...]] = {}
    started: dict[str, list[int]] = {}
    handles = []

    def pre(name: str):
        def fn(m: nn.Module, inp: tuple) -> None:
            x = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
            if x is not None:
                inputs[name] = tuple(int(d) for d in x.shape[1:])
            started.setdefault(name, []).append(counter.get_total_flops())

        return fn

    def post(name: str):
        def fn(m: nn.Module, inp: tuple, out: object) -> None:
            if started.get(name):  # a module called twice (timm CBAM's shared MLP) counts twice
                macs[name] = macs.get(name, 0) + (counter.get_total_flops() - started[name].pop()) // 2

        return fn

    # Swap in meta tensors for parameters and buffers: no copy of the (possibly 0.5 GB) weights.
    fake = {
        n: torch.empty_like(t, device="meta") for n, t in [*model.named_parameters(), *model.named_buffers()]
    }
    for n, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(pre(n)))
        handles.append(m.register_forward_hook(post(n)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _counting(counter):
            torch.func.functional_call(model, fake, (torch.empty(1, 3, *input_size, device="meta"),))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return LayerShapes(counter.get_total_flops() // 2, macs, inputs)


def model_cost(
    model: nn.Module,
    input_size: tuple[int, int] = (224, 224),
    blocks: list[AttentionBlock] | None = None,
) -> ModelCost:
    """Per-block attention parameters and MACs, and their share of the model.

    ``blocks``: the attention blocks to cost (e.g. a recorder's ``block_infos``, which include blocks
    found by behaviour); by default every block the registry knows by type, looked up by name so a
    :func:`meta_copy` of the model can be costed with the original's list.
    """
    from .taps import attention_blocks

    total_params = count_params(model)
    shapes = layer_macs(model, input_size)
    if blocks is None:
        blocks = attention_blocks(model)[0]
    modules = dict(model.named_modules())
    costs = []
    elementwise = 0
    for info in blocks:
        block = modules.get(info.name)
        if block is None:
            continue
        params = sum(p.numel() for p in block.parameters())
        shape = shapes.inputs.get(info.name, (0, 0, 0))
        dim = info.tap.channel_dim - 1 if info.tap is not None else 0  # in the shape without batch
        channels = info.channels or (shape[dim] if len(shape) == 3 else 0)
        rest = [d for i, d in enumerate(shape) if i != dim % max(1, len(shape))]
        hw = (rest[0], rest[1]) if len(shape) == 3 else (0, 0)
        first = next((m for m in block.modules() if isinstance(m, nn.Linear | nn.Conv2d)), None)
        hidden = (first.out_features if isinstance(first, nn.Linear) else first.out_channels) if first else 0
        inner = shapes.macs.get(info.name, 0)
        # Squeeze (one add per element) and scale (one multiply per element) on top of its layers.
        extra = 2 * channels * hw[0] * hw[1]
        elementwise += extra
        costs.append(
            BlockCost(
                info.name,
                channels,
                hidden,
                params,
                hw,
                inner + extra,
                params / total_params,
                info.kind,
                info.found_by,
                info.recorded,
                info.note,
            )
        )
    return ModelCost(
        total_params=total_params,
        attention_params=sum(b.params for b in costs),
        total_macs=shapes.total_macs + elementwise,
        attention_macs=sum(b.macs for b in costs),
        blocks=costs,
        input_size=input_size,
    )


def attention_counts(cost: ModelCost) -> dict[str, int]:
    """kind -> number of blocks, in order of first appearance (``se: 16``)."""
    counts: dict[str, int] = {}
    for b in cost.blocks:
        counts[b.kind] = counts.get(b.kind, 0) + 1
    return counts


def format_cost_table(cost: ModelCost) -> str:
    """The article's per-block table (params = 2 * C^2 / r for SE) with spatial size, MACs and kind."""
    rows = [f"{'block':<18}{'C':>6}{'C/r':>6}{'params':>10}{'2C²/r':>10}{'map':>10}{'MACs':>14}  kind"]
    for i, b in enumerate(cost.blocks, 1):
        formula = f"{2 * b.channels * b.hidden:,}" if b.kind == "se" else "-"
        label = f"{'SE' if b.kind == 'se' else '#'}{i} {b.name}"
        kind = (
            b.kind
            + ("" if b.found_by == "type" else f" ({b.found_by})")
            + ("" if b.recorded else ", not recorded")
        )
        rows.append(
            f"{label:<18}{b.channels:>6}{b.hidden:>6}{b.params:>10,}{formula:>10}"
            f"{f'{b.spatial[0]}x{b.spatial[1]}':>10}{b.macs:>14,}  {kind}"
        )
    rows.append(
        f"{'total':<18}{'':>6}{'':>6}{cost.attention_params:>10,}{'':>10}{'':>10}{cost.attention_macs:>14,}"
    )
    rows.append(
        f"attention parameters: {cost.attention_params:,} of {cost.total_params:,} "
        f"({100 * cost.attention_share:.3f}% of the model)"
    )
    rows.append(
        f"MACs at {cost.input_size[0]}x{cost.input_size[1]}: {cost.total_macs / 1e9:.2f} G, attention "
        f"{cost.attention_macs / 1e6:.2f} M ({100 * cost.attention_macs / max(1, cost.total_macs):.3f}%)"
    )
    return "\n".join(rows)

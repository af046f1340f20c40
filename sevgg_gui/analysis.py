"""Parameter and FLOP analysis: the article's section 5.2 table, computed from the model itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .recorder import find_gate_blocks


@dataclass
class BlockCost:
    name: str
    channels: int
    hidden: int
    params: int
    spatial: tuple[int, int]
    macs: int  # multiply-accumulates: squeeze sum + two FCs + scale
    share: float  # of the whole model's parameters


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
    total_macs: int  # conv / linear multiply-accumulates for one image
    macs: dict[str, int]  # module name -> its own conv / linear MACs
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


def layer_macs(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> LayerShapes:
    """Conv/linear MACs for one image, per module, and each module's input shape.

    Runs on the ``meta`` device: shapes only, no memory or compute.
    """
    macs: dict[str, int] = {}
    inputs: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook(name: str):
        def fn(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            x = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
            if x is not None:
                inputs[name] = tuple(int(d) for d in x.shape[1:])
            if isinstance(m, nn.Conv2d | nn.Conv1d):
                k = 1
                for d in m.kernel_size:
                    k *= d
                macs[name] = int(out[0].numel() * (m.in_channels // m.groups) * k)
            elif isinstance(m, nn.Linear) and x is not None:
                macs[name] = int(m.in_features * m.out_features * (x.numel() // x.shape[-1] // x.shape[0]))

        return fn

    # Swap in meta tensors for parameters and buffers: no copy of the (possibly 0.5 GB) weights.
    fake = {
        n: torch.empty_like(t, device="meta") for n, t in [*model.named_parameters(), *model.named_buffers()]
    }
    for n, m in model.named_modules():
        handles.append(m.register_forward_hook(hook(n)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.func.functional_call(model, fake, (torch.empty(1, 3, *input_size, device="meta"),))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return LayerShapes(sum(macs.values()), macs, inputs)


def model_cost(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> ModelCost:
    """Per-block attention parameters and MACs, and their share of the model."""
    total_params = count_params(model)
    shapes = layer_macs(model, input_size)
    blocks = []
    elementwise = 0
    for name, block in find_gate_blocks(model):
        params = sum(p.numel() for p in block.parameters())
        shape = shapes.inputs.get(name, (0, 0, 0))
        channels, hw = shape[0], (shape[1], shape[2]) if len(shape) == 3 else (0, 0)
        first = next((m for m in block.modules() if isinstance(m, nn.Linear | nn.Conv2d)), None)
        hidden = (first.out_features if isinstance(first, nn.Linear) else first.out_channels) if first else 0
        inner = sum(v for k, v in shapes.macs.items() if k.startswith(name + "."))
        # Squeeze (one add per element) and scale (one multiply per element) on top of its layers.
        extra = 2 * channels * hw[0] * hw[1]
        elementwise += extra
        blocks.append(BlockCost(name, channels, hidden, params, hw, inner + extra, params / total_params))
    return ModelCost(
        total_params=total_params,
        attention_params=sum(b.params for b in blocks),
        total_macs=shapes.total_macs + elementwise,
        attention_macs=sum(b.macs for b in blocks),
        blocks=blocks,
        input_size=input_size,
    )


def format_cost_table(cost: ModelCost) -> str:
    """The article's per-block table (params = 2 * C^2 / r) with spatial size and MACs."""
    rows = [f"{'block':<18}{'C':>6}{'C/r':>6}{'params':>10}{'2C²/r':>10}{'map':>10}{'MACs':>14}"]
    for i, b in enumerate(cost.blocks, 1):
        formula = 2 * b.channels * b.hidden
        rows.append(
            f"{f'SE{i} {b.name}':<18}{b.channels:>6}{b.hidden:>6}{b.params:>10,}{formula:>10,}"
            f"{f'{b.spatial[0]}x{b.spatial[1]}':>10}{b.macs:>14,}"
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

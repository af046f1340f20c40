"""The Squeeze-and-Excitation block, with the article's exact parameter layout.

State-dict keys are ``avg_pool`` (no parameters), ``fc.0.weight`` (C/r x C) and ``fc.2.weight``
(C x C/r), both without bias, so a checkpoint of the article's ``SEBlock`` loads unchanged.

Speed (see ``benchmarks/bench_se_block.py``): the block is memory-bound, so its cost is the passes
over the feature map. The squeeze reads it once, the scale reads and writes it once, and nothing else
touches it: in inference the scale is done in place (no fresh output to allocate and page-fault), and
the excitation MLP runs as four plain function calls when nobody hooks into it (a small map is
dominated by per-call overhead). The arithmetic is the article's either way.

In VGG16-SE every block is followed by a max-pool, and a gate s >= 0 commutes with it exactly:
``maxpool(x * s) == maxpool(x) * s`` per channel (rounding is monotonic, so even bit for bit). In
inference :func:`run_sequential` therefore skips the full-size scale and multiplies the 4x smaller
pooled map: the block then costs one read of the feature map (the squeeze) instead of three passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module


def se_hidden(channels: int, reduction: int) -> int:
    """Hidden width of the excitation MLP; at least 1 so tiny channel counts do not crash."""
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels} and {reduction}")
    return max(1, channels // reduction)


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks() -> bool:
    return bool(
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """The squeeze: (B, C, H, W) -> (B, C) spatial means, as ``AdaptiveAvgPool2d(1)`` computes them.

    On a multi-threaded CPU, a channels_last map of fewer samples than threads is summed in
    ``threads`` contiguous slabs of rows. ``x.mean((2, 3))`` would split such a map between
    threads by channel, so every thread touches every cache line, and the in-place scale that follows
    (split by memory address) then pulls each line across cores: 4-13x slower than the two passes
    need to be at VGG16's batch-1 shapes.
    """
    if x.is_contiguous() or not x.is_cpu:
        return x.mean((2, 3))
    b, c, h, w = x.shape
    hw = h * w
    t = torch.get_num_threads()
    if (
        t > 1
        and b < t  # measured: with a batch of at least one sample per thread, mean() is as fast
        and hw % t == 0
        and hw > t
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.compiler.is_compiling()
    ):
        # (B, t, HW/t, C) view of the NHWC memory: t contiguous slabs of pixels per sample.
        slabs = x.as_strided((b, t, hw // t, c), (hw * c, (hw // t) * c, c, 1))
        return slabs.sum(2).sum(1).div_(hw)
    return x.mean((2, 3))


class SEBlock(nn.Module):
    """Squeeze (global average pool) -> excitation (FC, ReLU, FC, sigmoid) -> scale.

    ``fc`` maps the squeeze vector z (B, C) to the gate s (B, C); hooks on ``fc`` therefore see both
    exactly as computed, which is how :class:`~sevgg_gui.recorder.ExcitationRecorder` records them
    (a hooked or modified ``fc`` is always called as a module; only an untouched one is inlined).

    ``inplace`` lets the block scale its input in place when no gradient is involved (inference,
    ``no_grad``, or everything frozen). Only safe when the input is a dead intermediate (e.g. the
    output of the preceding in-place ReLU inside a Sequential); VGG16-SE turns it on for its own
    blocks, a standalone block leaves it off. Training (a gate or input that needs a gradient) always
    scales out of place.
    """

    def __init__(self, channel: int, reduction: int = 16, *, inplace: bool = False) -> None:
        super().__init__()
        hidden = se_hidden(channel, reduction)
        self.channels = channel
        self.reduction = reduction
        self.inplace = inplace
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        s = self.gate(x).view(b, c, 1, 1)
        if self.inplace and not (s.requires_grad or x.requires_grad):
            return x.mul_(s)
        return x * s

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C) gate s = fc(mean(x)), without applying it."""
        b, c = x.shape[0], x.shape[1]
        if _global_hooks():
            return self._modules["fc"](self._modules["avg_pool"](x).view(b, c))
        return self.excite(self.squeeze(x))

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C) channel means (through ``avg_pool`` if it was hooked or replaced)."""
        pool = self._modules["avg_pool"]
        if (
            type(pool) is nn.AdaptiveAvgPool2d
            and pool.output_size in (1, (1, 1))
            and x.dim() == 4
            and not _has_hooks(pool)
        ):
            return channel_mean(x)
        return pool(x).view(x.shape[0], x.shape[1])

    def excite(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C) squeeze -> (B, C) gate: ``fc(z)``, inlined when ``fc`` is the plain, unhooked MLP."""
        fc = self._modules["fc"]
        mods = fc._modules
        if type(fc) is nn.Sequential and len(mods) == 4 and not _has_hooks(fc):
            l1, act, l2, gate = mods.values()
            if (
                type(l1) is nn.Linear
                and type(act) is nn.ReLU
                and type(l2) is nn.Linear
                and type(gate) is nn.Sigmoid
                and not (_has_hooks(l1) or _has_hooks(act) or _has_hooks(l2) or _has_hooks(gate))
            ):
                # Exactly what the four modules compute (in-place activations give the same
                # numbers and are autograd-safe after a linear layer), without four module calls.
                p1, p2 = l1._parameters, l2._parameters
                h = torch.relu_(F.linear(z, p1["weight"], p1["bias"]))
                return torch.sigmoid_(F.linear(h, p2["weight"], p2["bias"]))
        return fc(z)

    def extra_repr(self) -> str:
        return f"channel={self.channels}, reduction={self.reduction}"

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def se_then_max_pool(se: nn.Module, pool: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``pool(se(x))`` as ``pool(x) * gate`` when that is provably the same, else ``None``.

    Requires: inference (no autograd), an unmodified SEBlock and MaxPool2d without hooks of their own
    (hooks on the block's ``fc`` are fine: the gate they see or rewrite is the one applied), and a
    gate >= 0. A sigmoid guarantees that; a hook on ``fc`` could change it (an intervention that sets
    a negative gate), so then it is checked, on the CPU only (no device sync on a GPU: fall back).
    """
    if (
        torch.is_grad_enabled()
        or type(pool) is not nn.MaxPool2d
        or pool.return_indices
        or not isinstance(se, SEBlock)
        or type(se).forward is not SEBlock.forward
        or x.dim() != 4
        or _has_hooks(se)
        or _has_hooks(pool)
        or _global_hooks()
    ):
        return None
    fc_hooked = any(_has_hooks(m) for m in se.fc.modules())
    if fc_hooked and not x.is_cpu:
        return None
    b, c = x.shape[0], x.shape[1]
    g = se.gate(x)
    if fc_hooked and bool((g < 0).any()):
        return None
    y = pool(x)
    return y.mul_(g.view(b, c, 1, 1).to(y.dtype))


def run_sequential(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``seq(x)``, with each SE block + max-pool pair run as :func:`se_then_max_pool` in inference."""
    if torch.is_grad_enabled() or "forward" in seq.__dict__ or _has_hooks(seq) or _global_hooks():
        return seq(x)  # training, a patched forward (inference.CpuFastPath pairs them itself), hooks
    mods = list(seq._modules.values())
    i, n = 0, len(mods)
    while i < n:
        if i + 1 < n and isinstance(mods[i], SEBlock):
            y = se_then_max_pool(mods[i], mods[i + 1], x)
            if y is not None:
                x = y
                i += 2
                continue
        x = mods[i](x)
        i += 1
    return x

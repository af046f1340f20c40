"""Attention blocks found by what they do: output = input x a per-channel, input-dependent factor.

One forward of a two-image batch (two different synthetic images, scaled down to ``PROBE_SIZE``
when larger; a model that only runs at its own size gets a second try at it) with hooks on the
candidate modules decides it. A module is a gate block when, for both images,

* its output has its input's shape, with at least two positions per channel (a per-channel factor
  is otherwise indistinguishable from an elementwise one);
* output / input is constant over each channel's positions (read where ``|input|`` is largest and
  checked everywhere: ReLU, GELU or any elementwise op fails this);
* the input varies over positions (where it is constant, a gate and an elementwise op look alike);
* that factor differs between channels (a per-sample scalar is not a channel gate), and
* it differs between the two images (BatchNorm in eval, LayerScale, a fixed affine scale are static),
  both by far more than the residual of the per-channel fit (a true gate fits to rounding).

Candidates are modules of types no registry knows, defined outside ``torch`` (``torch.nn``'s own
layers are known not to be gates), neither inside a registered block nor around one. A found module
that contains another found one is dropped (the container of an inline SE is not the SE). Channels
first (B, C, ...) is tried, then channels last (B, ..., C).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

# |y - x*g| <= REL * max|y| of the channel: fp32 products are exact to ~1e-7 relative, so 1e-4 leaves
# three orders of margin for the gate estimate's own rounding and still rejects any elementwise op.
REL = {torch.float32: 1e-4, torch.float64: 1e-8, torch.float16: 1e-2, torch.bfloat16: 2e-2}
# Two factors "differ" (across channels, across the two images) when they differ by more than this
# fraction of their size, and by more than SIGNAL times the residual the per-channel fit left: a true
# gate fits to rounding (~1e-7), so even a random-init SE whose gates barely move is found, while a
# nearly linear elementwise op (SiLU on features of ~1e-4: ratio 0.5 + x/4, fitting only to ~1e-4)
# cannot pass off differences of the same order as a gate.
DIFFER = {torch.float32: 1e-5, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 2e-2}
SIGNAL = 100.0
# A channel whose input is (nearly) constant over positions cannot tell a gate from an elementwise
# op; the input must vary by this fraction of its size in the median channel.
SPREAD = 1e-2
SAMPLE = 16  # positions per channel in the quick rejection test (and kept for in-place blocks)
# The probe first runs at this size (a gate is a gate at any size): two images at 128 px cost about
# 0.65 of one forward at 224 px. A model that needs its own size (ViT) fails fast and is probed at it.
PROBE_SIZE = 128


@dataclass
class ProbeResult:
    """What the probe found: ``found`` = (name, channel_dim, channels) in model order."""

    found: list[tuple[str, int, int]] = field(default_factory=list)
    candidates: int = 0
    forwards: int = 0
    seconds: float = 0.0
    error: str | None = None

    def summary(self) -> str:
        if self.error:
            return f"behaviour probe failed: {self.error}"
        if not self.candidates:
            return "behaviour probe: every module type is known (no forward needed)"
        return (
            f"behaviour probe: {len(self.found)} gate block(s) among {self.candidates} module(s) of "
            f"unregistered types, {self.forwards} forward(s), {self.seconds * 1e3:.0f} ms"
        )


def example_input(size: int | tuple[int, int], *, device: torch.device | str = "cpu", dtype=torch.float32):
    """Two clearly different images (B=2), normalised-looking: white noise, and a smooth coloured
    pattern with its own mean and contrast, so input-dependent gates differ between them."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, h, w, generator=g)
    coarse = torch.randn(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    smooth = 1.5 * smooth + torch.tensor([0.8, -0.5, 0.2]).view(1, 3, 1, 1)
    return torch.cat([noise, smooth]).to(device=device, dtype=dtype)


def candidates(model: nn.Module, known: list[str]) -> list[tuple[str, nn.Module]]:
    """Modules the probe looks at: unregistered, not from torch, not inside or around a known block."""
    from .registry import registered

    prefixes = tuple(k + "." for k in known)
    out = []
    for name, m in model.named_modules():
        if not name or registered(m) or type(m).__module__.split(".")[0] == "torch":
            continue
        if name.startswith(prefixes) or any(k.startswith(name + ".") for k in known):
            continue
        out.append((name, m))
    return out


def _channels_first(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, C, N) view/copy with the channel axis ``dim`` second and all positions flattened."""
    if dim != 1:
        t = t.movedim(dim, 1)
    return t.reshape(t.shape[0], t.shape[1], -1)


def factors(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per (sample, channel) factor y/x read where |x| is largest; NaN where the channel is all zero.
    ``x``, ``y``: (B, C, N)."""
    idx = x.abs().argmax(dim=-1, keepdim=True)
    xr = x.gather(-1, idx)
    g = y.gather(-1, idx) / xr
    return torch.where(xr == 0, torch.full_like(g, float("nan")), g).squeeze(-1)


def is_gate(x: torch.Tensor, y: torch.Tensor, dim: int) -> bool:
    """The test in the module docstring for one call (``x``, ``y`` in the model's layout)."""
    X, Y = _channels_first(x, dim).float(), _channels_first(y, dim).float()
    if X.shape[0] < 2 or X.shape[-1] < 2:
        return False
    rel = REL.get(x.dtype, 1e-4)
    # Quick rejection (a few small ops; most modules end here): the ratio at each channel's first
    # positions must already be one number per channel (NaN where x = 0 rejects nothing).
    r = Y[..., :4] / X[..., :4]
    if ((r.amax(-1) - r.amin(-1)).abs() > rel * r.abs().amax(-1) + 1e-30).any():
        return False
    g = factors(X, Y)
    known = torch.isfinite(g)
    scale = Y.abs().amax(dim=-1)
    err = (Y - X * torch.nan_to_num(g)[..., None]).abs().amax(dim=-1)
    if (err > rel * scale + 1e-30)[known].any():
        return False
    if (scale > 0)[~known].any():  # output where the input is zero: not a multiplication
        return False
    if not known.any():
        return False
    spread = (X.amax(-1) - X.amin(-1)) / X.abs().amax(-1).clamp_min(1e-30)
    if float(spread[known].median()) < SPREAD:
        return False
    residual = float((err / scale.clamp_min(1e-30))[known].max())
    finite = torch.where(known, g, torch.zeros_like(g))
    big = finite.abs().amax().clamp_min(1e-30)
    diff = max(DIFFER.get(x.dtype, 1e-4), SIGNAL * residual) * big
    g_min = torch.where(known, g, torch.full_like(g, float("inf"))).amin(dim=1)
    g_max = torch.where(known, g, torch.full_like(g, float("-inf"))).amax(dim=1)
    varies_over_channels = bool(((g_max - g_min) > diff).any())
    both = known[0] & known[1]
    varies_with_input = bool(((g[0] - g[1]).abs() > diff)[both].any())
    return varies_over_channels and varies_with_input


def _smaller(example: torch.Tensor) -> torch.Tensor | None:
    """The example scaled down to ``PROBE_SIZE`` (bilinear), or None when it is not larger."""
    if example.dim() != 4 or min(example.shape[-2:]) <= PROBE_SIZE:
        return None
    h, w = example.shape[-2:]
    scale = PROBE_SIZE / min(h, w)
    size = (max(PROBE_SIZE, round(h * scale)), max(PROBE_SIZE, round(w * scale)))
    return torch.nn.functional.interpolate(example, size=size, mode="bilinear", align_corners=False)


def probe(model: nn.Module, example: torch.Tensor, known: list[str]) -> ProbeResult:
    """Run one forward of ``example`` (B >= 2, two different images) and test every candidate."""
    result = ProbeResult()
    cands = candidates(model, known)
    result.candidates = len(cands)
    if not cands or example.is_meta or any(p.is_meta for p in model.parameters()):
        if cands and (example.is_meta or any(p.is_meta for p in model.parameters())):
            result.error = "model on the meta device (no values to probe)"
        return result
    verdict: dict[str, tuple[bool, int, int] | None] = {}  # name -> (ok, dim, channels); None: rejected
    saved: dict[str, tuple[int, torch.Tensor, torch.Tensor] | None] = {}

    def pre(name: str):
        def fn(m: nn.Module, inputs: tuple) -> None:
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if x is None or x.dim() < 3:
                saved[name] = None
                return
            # The version counter tells an in-place block (x.mul_(g)) apart: for it, each channel's
            # first positions (channels first) are kept before the block overwrites them.
            sample = _channels_first(x.detach(), 1)[..., :SAMPLE].clone()
            saved[name] = (x._version, x.detach(), sample)

        return fn

    def post(name: str):
        def fn(m: nn.Module, inputs: tuple, y: object) -> None:
            if verdict.get(name, True) is None:
                return
            entry = saved.pop(name, None)
            ok = None
            if entry is not None and isinstance(y, torch.Tensor):
                version, x, sample = entry
                if y.shape != x.shape:
                    pass
                elif x._version != version:  # in place: judged on the sample (channels first only)
                    if is_gate(sample, _channels_first(y.detach(), 1)[..., :SAMPLE], 1):
                        ok = (True, 1, int(x.shape[1]))
                else:
                    for dim in (1, -1):
                        if is_gate(x, y, dim):
                            ok = (True, dim % x.dim(), int(x.shape[dim]))
                            break
            prev = verdict.get(name)
            verdict[name] = ok if prev is None or prev == ok else None

        return fn

    handles = []
    for name, m in cands:
        handles.append(m.register_forward_pre_hook(pre(name)))
        handles.append(m.register_forward_hook(post(name)))
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            small = _smaller(example)
            if small is not None:
                try:
                    result.forwards += 1
                    model(small)
                    example = None  # done
                except Exception:  # noqa: BLE001 - a fixed-size model: probe at its own size
                    verdict.clear()
                    saved.clear()
            if example is not None:
                result.forwards += 1
                model(example)
    except Exception as exc:  # noqa: BLE001 - the probe is informative; the model is still usable
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        return result
    finally:
        result.seconds = time.perf_counter() - t0
        model.train(was_training)
        for h in handles:
            h.remove()
    found = [(n, v[1], v[2]) for n, v in verdict.items() if v is not None and v[0]]
    names = [n for n, _, _ in found]
    # The innermost wins: a container whose output equals a found child's is not a block of its own.
    inner = [f for f in found if not any(o.startswith(f[0] + ".") for o in names)]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    result.found = sorted(inner, key=lambda f: order[f[0]])
    return result

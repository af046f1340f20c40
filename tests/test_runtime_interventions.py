"""Gate interventions in the runtime backends (issues #11 item 7, #14 item 1): the export has every
gate the torch recorder records (blocks found by behaviour too) and per gate block a mul/add input
pair, and ``OnnxPredictor.recorder`` / ``OpenVinoPredictor.recorder`` mute, boost and set gates
exactly like the torch Predictor's recorder.

Real models (random weights, small inputs), real exports, real onnxruntime and OpenVINO; the torch
Predictor is the reference. Each model is exported once per module and run by both runtimes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
timm = pytest.importorskip("timm")

from test_onnx_networks import nontrivial  # noqa: E402

from sevgg_gui.backends.onnx_runtime import OnnxPredictor  # noqa: E402
from sevgg_gui.backends.openvino_runtime import OpenVinoPredictor  # noqa: E402
from sevgg_gui.deploy.onnx_export import export_onnx  # noqa: E402
from sevgg_gui.inference import Predictor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INLINE_SE = REPO / "tests" / "data" / "user_models" / "inline_se.py"
# fp32 in both worlds, but different kernels (torch's oneDNN, onnxruntime's MLAS, OpenVINO's) sum in
# other orders: a gate (a sigmoid of sums over <= a few hundred channels) moves by ~1e-7, a logit by
# ~1e-6 of its size. 1e-4 (relative to max(1, |value|) for logits) is the issues' bound, with margin.
TOL = 1e-4
# The same runtime, the same input, only other channels' gates changed: a gate of a block before the
# intervened one is computed by the very same kernels on the very same numbers (bit-identical here);
# 1e-6 only allows for a runtime that splits work differently between two runs.
SAME = 1e-6
RUNTIMES = {"onnxruntime": OnnxPredictor, "openvino": OpenVinoPredictor}

pytestmark = pytest.mark.usefixtures("one_thread")


def _vgg16_se() -> nn.Module:
    from sevgg_gui.training.models import build_model

    torch.manual_seed(0)
    model = build_model("vgg16_se", 10, width=0.125)
    with torch.no_grad():
        model.classifier[6].weight.mul_(100.0)  # trained-like logits (~1-10), as conftest.slim_ckpt
    return model


def _vgg16_cbam() -> nn.Module:
    """A channel gate and a spatial map per block: the inputs pair with the gates, not the maps."""
    from sevgg_gui.models.networks import vgg16_attention

    torch.manual_seed(0)
    return nontrivial(vgg16_attention("cbam", 5, width=0.125))


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=5)
        with torch.no_grad():  # timm zero-inits each residual branch's last BN gamma: make gates vary
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
        return nontrivial(model)

    return build


def _light_cbam() -> nn.Module:
    """timm's light CBAM applies its channel sigmoid inline: the block-output route."""
    from timm.layers.cbam import LightCbamModule

    torch.manual_seed(0)
    return nontrivial(
        nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            LightCbamModule(16, rd_ratio=0.25),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 5),
        )
    )


def _inline_se() -> nn.Module:
    """A user's model code whose SE is written inline: found by behaviour only."""
    from sevgg_gui.zoo import load_model

    return load_model(None, model_code=f"{INLINE_SE}:build").model


# name -> (builder, input size); the gates are read from a submodule (VGG16-SE, timm SE), computed
# inline (light CBAM) or as output / input (the inline SE found by behaviour)
MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "vgg16_se": (_vgg16_se, 32),
    "vgg16_cbam": (_vgg16_cbam, 32),
    "seresnet18": (_timm("seresnet18"), 64),
    "mobilenetv3_small_050": (_timm("mobilenetv3_small_050"), 64),
    "light_cbam": (_light_cbam, 32),
    "inline_se": (_inline_se, 64),
}


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    build, size = MODELS[request.param]
    model = build().eval()
    path = tmp_path_factory.mktemp("interventions") / f"{request.param}.onnx"
    export_onnx(model, path, input_size=size, with_excitations=True, check=False)
    return request.param, model, path


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [(rng.random((70 + 9 * i, 80, 3)) * 255).astype(np.uint8) for i in range(2)]


def _gates_close(got: dict, want: dict, tol: float = TOL) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=tol, rtol=0, equal_nan=True, err_msg=name)


def _logits(pred, torch_pred: Predictor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(runtime logits, torch logits) for one image under each one's current interventions."""
    x = pred.preprocess(image).numpy()[None]
    got = pred.session.run(None, {pred.input_name: x, **pred.recorder.feeds()})[0]
    with torch.no_grad():
        want = torch_pred.model(torch.from_numpy(x)).numpy()  # through the recorder's hooks
    return got, want


def _logits_close(got: np.ndarray, want: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= TOL * scale


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_runtime_gates_and_interventions_match_torch(exported, runtime, images) -> None:
    name, model, path = exported
    pred = RUNTIMES[runtime](path)
    torch_pred = Predictor(model, device="cpu", preprocess=pred.preprocess)
    try:
        # Exactly the recorder's gate blocks: same names, same order (behaviour-found ones too).
        assert pred.block_names == torch_pred.block_names
        assert list(pred.recorder.blocks) == list(torch_pred.recorder.blocks)
        assert {b: t.channels for b, t in pred.recorder.taps.items()} == {
            b: t.channels for b, t in torch_pred.recorder.taps.items()
        }
        assert [b.describe() for b in pred.recorder.block_infos] == [
            b.describe() for b in torch_pred.recorder.block_infos
        ]
        img = images[0]
        base, want = pred.predict(img), torch_pred.predict(img)
        assert [p.index for p in base.topk] == [p.index for p in want.topk]
        np.testing.assert_allclose([p.prob for p in base.topk], [p.prob for p in want.topk], atol=TOL)
        _gates_close(base.excitations, want.excitations)

        blocks = list(pred.recorder.taps)
        block = blocks[len(blocks) // 2]
        g0 = base.excitations[block]
        finite = np.where(np.isfinite(g0), g0, -np.inf)
        c_mute, c_boost = (int(c) for c in np.argsort(-finite, kind="stable")[:2])
        c_set = next(c for c in range(len(g0)) if c not in (c_mute, c_boost) and abs(g0[c] - 0.25) > 1e-3)
        assert g0[c_mute] > 1e-3 and g0[c_boost] > 1e-3, g0  # each intervention really changes its gate
        for rec in (pred.recorder, torch_pred.recorder):
            rec.intervene(block, c_mute, value=0.0)
            rec.intervene(block, [c_boost], scale=2.0)
            rec.intervene(block, c_set, value=0.25)
        assert pred.recorder.interventions == torch_pred.recorder.interventions

        got, want = pred.predict(img), torch_pred.predict(img)
        g = got.excitations[block]
        assert g[c_mute] == 0.0 and g[c_set] == 0.25  # gate * 0 + value: exact
        np.testing.assert_allclose(g[c_boost], 2 * g0[c_boost], rtol=SAME)
        moved = np.flatnonzero(~np.isclose(g, g0, rtol=0, atol=SAME, equal_nan=True))
        assert sorted(moved.tolist()) == sorted({c_mute, c_boost, c_set})
        for earlier in blocks[: blocks.index(block)]:  # upstream of the intervention: untouched
            np.testing.assert_allclose(got.excitations[earlier], base.excitations[earlier], atol=SAME)
        # The runtime and torch agree under the same intervention: gates, maps, top-5 and logits.
        _gates_close(got.excitations, want.excitations)
        _gates_close(got.spatial_maps, want.spatial_maps)
        assert [p.index for p in got.topk] == [p.index for p in want.topk]
        _logits_close(*_logits(pred, torch_pred, images[1]))

        for rec in (pred.recorder, torch_pred.recorder):
            rec.undo()  # the set value goes; mute and boost stay
        got, want = pred.predict(img), torch_pred.predict(img)
        assert got.excitations[block][c_mute] == 0.0
        np.testing.assert_allclose(got.excitations[block][c_set], g0[c_set], atol=SAME)
        _gates_close(got.excitations, want.excitations)

        for rec in (pred.recorder, torch_pred.recorder):
            rec.clear_interventions()
        got = pred.predict(img)
        assert pred.recorder.interventions == {}
        _gates_close(got.excitations, base.excitations, tol=SAME)
        _logits_close(*_logits(pred, torch_pred, images[1]))
    finally:
        torch_pred.close()
        pred.close()


def test_intervention_errors_are_the_recorders(tmp_path: Path) -> None:
    model = _inline_se()
    path = tmp_path / "inline.onnx"
    export_onnx(model, path, input_size=64, with_excitations=True, check=False)
    rec = OnnxPredictor(path).recorder
    with pytest.raises(ValueError, match="exactly one of value= or scale="):
        rec.intervene("features.2", 0, value=0.0, scale=2.0)
    with pytest.raises(KeyError, match="unknown block"):
        rec.intervene("features.9", 0, value=0.0)
    with pytest.raises(IndexError, match="16 channels"):
        rec.intervene("features.2", 16, value=0.0)
    assert rec.interventions == {}


def test_old_export_runs_but_refuses_interventions_in_one_line(tmp_path: Path, images) -> None:
    """An export without intervention inputs (before exporter version 2) still predicts; intervene
    says why not and how to rebuild."""
    model = _vgg16_se().eval()
    path = tmp_path / "old.onnx"
    report = export_onnx(model, path, input_size=32, with_excitations=True, interventions=False, check=False)
    assert report.intervention_inputs == []
    for cls in RUNTIMES.values():
        pred = cls(path)
        assert len(pred.predict(images[0]).excitations) == 5
        with pytest.raises(ValueError, match="predates gate interventions") as err:
            pred.recorder.intervene("features.4", 0, value=0.0)
        assert "\n" not in str(err.value) and "sevgg export --with-excitations" in str(err.value)

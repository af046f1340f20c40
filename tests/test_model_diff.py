"""Comparing two models on the same inputs (sevgg_gui.model_diff, backends.onnx_runtime).

Real models throughout: the shared slim VGG16-SE checkpoint (32 px), its ONNX and INT8 exports run by
onnxruntime, a pruned copy made by ``sevgg prune``, Google's MobileNetV3-Small from ../shared.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from sevgg_gui.inference import Predictor
from sevgg_gui.model_diff import (
    LiveComparison,
    compare_results,
    cosine,
    diff_models,
    format_diff,
    origin_map,
    pair_blocks,
    ranks,
    spearman,
    topk_overlap,
)
from sevgg_gui.zoo import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
from sevgg_gui.bundled import SAMPLES  # noqa: E402


def _images() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))


# ----------------------------------------------------------------------------------- pure parts
def test_pairing_by_order_and_channels_lists_the_rest() -> None:
    vgg = [
        ("features.4", 64),
        ("features.10", 128),
        ("features.18", 256),
        ("features.26", 512),
        ("f.34", 512),
    ]
    same = pair_blocks(vgg, vgg)
    assert [(p.a, p.b, p.channels) for p in same.pairs] == [(n, n, c) for n, c in vgg]
    assert same.unpaired() == []
    # B has an extra block in the middle and lacks the last: the rest still pairs in order.
    b = [("x1", 64), ("x2", 96), ("x3", 128), ("x4", 256), ("x5", 512)]
    p = pair_blocks(vgg, b)
    assert [(q.a, q.b) for q in p.pairs] == [
        ("features.4", "x1"), ("features.10", "x3"), ("features.18", "x4"), ("features.26", "x5"),
    ]  # fmt: skip
    assert p.unpaired() == [
        {"model": "a", "block": "f.34", "channels": 512},
        {"model": "b", "block": "x2", "channels": 96},
    ]
    # Equal counts in a different order cannot cross: order is kept, not guessed.
    crossed = pair_blocks([("a1", 16), ("a2", 32)], [("b1", 32), ("b2", 16)])
    assert len(crossed.pairs) == 1 and len(crossed.unpaired()) == 2


def test_pairing_by_origin_of_a_pruned_model() -> None:
    record = {"source": "full.pth", "source_sha256": "abc", "kept_channels": {"s1": [0, 2, 5], "s2": [1]}}
    kept = origin_map(record, "abc", "/x/full.pth")
    assert origin_map(record, "other", "/x/full.pth") is None  # another file of the same name
    assert origin_map({k: v for k, v in record.items() if k != "source_sha256"}, None, "/y/full.pth") == kept
    p = pair_blocks([("s1", 8), ("s2", 4)], [("s1", 3), ("s2", 1)], b_from_a=kept)
    assert [q.by_origin for q in p.pairs] == [True, True]
    assert p.pairs[0].a_index.tolist() == [0, 2, 5] and p.pairs[0].b_index.tolist() == [0, 1, 2]
    # The other way round (A is the pruned one).
    q = pair_blocks([("s1", 3), ("s2", 1)], [("s1", 8), ("s2", 4)], a_from_b=kept)
    assert q.pairs[0].b_index.tolist() == [0, 2, 5] and q.pairs[0].a_index.tolist() == [0, 1, 2]
    # Without the record the widths differ: nothing pairs.
    assert pair_blocks([("s1", 8), ("s2", 4)], [("s1", 3), ("s2", 1)]).pairs == []


def test_similarity_measures_on_known_vectors() -> None:
    a = np.array([0.1, 0.5, 0.9, 0.3])
    assert ranks(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [3.0, 0.5, 0.5, 2.0]  # ties: average rank
    assert spearman(a, a[::-1].copy()) != 1.0
    assert spearman(a, 2 * a + 1) == 1.0 and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.full(4, 0.5), np.full(4, 0.5)) == 1.0  # identical untrained gates
    assert np.isnan(spearman(np.full(4, 0.5), a))  # one side has no ranking
    assert cosine(a, 3 * a) == pytest.approx(1.0) and cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    x = np.arange(20.0)
    y = x.copy()
    y[19], y[0] = y[0], y[19]  # the largest channel drops to the bottom
    assert topk_overlap(x, x) == 1.0 and topk_overlap(x, y) == 0.9


# ----------------------------------------------------------------------------------- real models
def test_a_vs_a_agrees_fully(slim_ckpt: Path) -> None:
    """Two separate loads of one checkpoint: the same weights through the same kernels on the same
    input give the same gates; tolerances allow float32 rounding only (1e-6 on gates in [0, 1]), in
    case oneDNN split work differently between the two runs."""
    d = diff_models(str(slim_ckpt), str(slim_ckpt), _images(), device="cpu")
    assert d["images"] == len(_images()) == 5
    assert d["top1_agreement"] == 1.0 and d["top5_agreement"] == 1.0
    assert [b["a"] for b in d["blocks"]] == [b["b"] for b in d["blocks"]] and len(d["blocks"]) == 5
    for b in d["blocks"]:
        assert b["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert b["spearman"] == pytest.approx(1.0, abs=1e-6)
        assert b["top10_overlap"] == 1.0
        assert b["mean_abs_diff"] <= 1e-6 and b["max_abs_diff"] <= 1e-6
    assert d["unpaired"] == []
    assert "top-1 agreement 100.0%" in format_diff(d)


def test_a_muted_channel_differs_in_exactly_that_channel(slim_ckpt: Path) -> None:
    loaded = load_model(str(slim_ckpt))
    pa = Predictor(loaded.model, device="cpu", preprocess=loaded.preprocess())
    pb = Predictor(copy.deepcopy(loaded.model), device="cpu", preprocess=loaded.preprocess())
    blocks = pa.block_names
    muted_block, ch = blocks[2], 5
    pb.recorder.intervene(muted_block, ch, value=0.0)
    cmp = LiveComparison(pb)
    for path in _images():
        ra = pa.predict(path)
        frame = cmp.run(ra.image, ra)
        by_block = {f.pair.a: f for f in frame.blocks}
        for name in blocks[:2]:  # upstream of the mute: the same computation, the same gates
            assert np.abs(by_block[name].diff).max() <= 1e-6
        d = by_block[muted_block].diff
        changed = np.flatnonzero(np.abs(d) > 1e-6)  # 1e-6: float32 rounding, far below any gate
        assert changed.tolist() == [ch], changed
        assert d[ch] == pytest.approx(-ra.excitations[muted_block][ch], abs=1e-6)
    # The data-set summary names it as the most changed channel of that block.
    s = diff_models(pa, pb, _images())
    blk = next(b for b in s["blocks"] if b["a"] == muted_block)
    assert blk["most_changed"][0]["a_channel"] == ch and blk["cosine"] < 1.0
    assert all(b["mean_abs_diff"] <= 1e-6 for b in s["blocks"][:2])
    pa.close()
    pb.close()


def test_origin_pairing_of_a_pruned_checkpoint_is_exact(slim_ckpt: Path, tmp_path: Path) -> None:
    """Zero a quarter of every conv's filters, let `sevgg prune` (L1) remove exactly those: the pruned
    model computes the same gates for the channels it kept, and the diff pairs them by origin."""
    from sevgg_gui.checkpoints import save_checkpoint
    from sevgg_gui.deploy.prune import PruneConfig, prune_checkpoint, vgg_layout
    from sevgg_gui.training.models import load_trained

    model, meta = load_trained(slim_ckpt)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for s in vgg_layout(model)[1]:
            conv = model.features[s.index]
            drop = torch.randperm(s.channels, generator=g)[: int(0.25 * s.channels)]
            conv.weight[drop] = 0.0
            conv.bias[drop] = 0.0
    full = tmp_path / "full.pth"
    keep = {k: meta[k] for k in ("arch", "width", "reduction", "dropout", "input_size")}
    save_checkpoint(model, full, class_names=meta["class_names"], **keep)
    pruned = tmp_path / "pruned.pth"
    prune_checkpoint(PruneConfig(str(full), str(pruned), ratio=0.25, latency_runs=1), log=lambda _: None)

    d = diff_models(str(full), str(pruned), _images(), device="cpu")
    assert len(d["blocks"]) == 5 and d["unpaired"] == []
    widths = [b["channels"] for b in d["blocks"]]
    assert all(b["by_origin"] for b in d["blocks"]) and widths == [6, 12, 24, 48, 48]
    for b in d["blocks"]:
        # Only the summation order of the convs changed (zero terms left out): float32 rounding.
        assert b["max_abs_diff"] <= 1e-5 and b["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert d["top1_agreement"] == 1.0
    assert "paired by origin" in format_diff(d)


def test_onnx_predictor_reproduces_the_torch_result(slim_ckpt: Path, tmp_path: Path, is_one_line) -> None:
    pytest.importorskip("onnxruntime")
    from sevgg_gui.backends import open_predictor
    from sevgg_gui.backends.onnx_runtime import OnnxModelError, OnnxPredictor
    from sevgg_gui.deploy.onnx_export import export_checkpoint

    out = tmp_path / "slim.onnx"
    export_checkpoint(slim_ckpt, out, with_excitations=True, check=False)
    onnx_pred = open_predictor(out).predictor
    torch_pred = open_predictor(str(slim_ckpt), device="cpu").predictor
    assert isinstance(onnx_pred, OnnxPredictor)
    assert onnx_pred.block_names == torch_pred.block_names
    assert onnx_pred.preprocess == torch_pred.preprocess
    for path in _images():
        ro, rt = onnx_pred.predict(path), torch_pred.predict(path)
        assert [p.label for p in ro.topk][:1] == [p.label for p in rt.topk][:1]
        assert ro.topk[0].prob == pytest.approx(rt.topk[0].prob, abs=1e-4)
        for name in rt.excitations:  # onnxruntime vs oneDNN kernels: float32 rounding only
            assert np.abs(ro.excitations[name] - rt.excitations[name]).max() < 1e-4
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(OnnxModelError) as e:
        OnnxPredictor(bad)
    assert is_one_line(str(e.value)) and "bad.onnx" in str(e.value)


def test_slim_vs_its_int8_export_within_the_reported_gate_drift(slim_ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from sevgg_gui.deploy.onnx_export import export_checkpoint
    from sevgg_gui.deploy.quantize import QuantizeConfig, quantize_onnx

    fp32 = tmp_path / "slim.onnx"
    export_checkpoint(slim_ckpt, fp32, with_excitations=True, check=False)
    int8 = tmp_path / "slim.int8.onnx"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in _images():
        (folder / p.name).write_bytes(p.read_bytes())
    report = quantize_onnx(
        QuantizeConfig(onnx=str(fp32), out=str(int8), calib_data=str(folder), latency_runs=1, threads=1),
        log=lambda _: None,
    )
    assert report.max_gate_diff is not None and report.max_gate_diff > 0
    d = diff_models(str(slim_ckpt), str(int8), _images(), device="cpu")
    assert len(d["blocks"]) == 5 and d["unpaired"] == []
    for i, b in enumerate(d["blocks"], start=1):
        drift = report.gate_max_abs_diff[f"se{i}"]
        # quantize measured int8 vs fp32 onnxruntime on these very images; torch fp32 differs from
        # onnxruntime fp32 by float32 rounding (< 1e-5), hence the small allowance on the maximum.
        assert b["max_abs_diff"] <= drift + 1e-5, (b, drift)
        assert b["mean_abs_diff"] <= drift  # a saturated block can have drift 0 (gates at 0 or 1)
        assert b["cosine"] > 0.99


def test_mobilenet_vs_vgg16_se_pairs_nothing(shared_dir: Path, se10) -> None:
    weights = shared_dir / "weights" / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} not found")
    vgg = Predictor(copy.deepcopy(se10), device="cpu")
    try:
        d = diff_models(str(weights), vgg, _images()[:2], device="cpu")
    finally:
        vgg.close()
    assert d["blocks"] == [] and d["images"] == 2
    sides = [u["model"] for u in d["unpaired"]]
    assert sides.count("a") == 9 and sides.count("b") == 5
    assert {u["channels"] for u in d["unpaired"] if u["model"] == "b"} == {64, 128, 256, 512}
    assert "no blocks could be paired" in format_diff(d)


def test_labels_give_per_class_differences(slim_ckpt: Path) -> None:
    loaded = load_model(str(slim_ckpt))
    pa = Predictor(loaded.model, device="cpu", preprocess=loaded.preprocess())
    pb = Predictor(copy.deepcopy(loaded.model), device="cpu", preprocess=loaded.preprocess())
    pb.recorder.intervene(pb.block_names[0], [0, 1, 2], value=0.0)
    items = [(p, i % 2) for i, p in enumerate(_images())]
    d = diff_models(pa, pb, items, class_names=["even", "odd"], limit=4)
    assert d["images"] == 4
    assert {c["class"] for c in d["classes"]} == {"even", "odd"}
    assert sum(c["images"] for c in d["classes"]) == 4
    assert all(c["mean_gate_diff"] > 0 for c in d["classes"])
    assert compare_results  # re-exported for the app
    pa.close()
    pb.close()

"""Shared fixtures for the headless core tests.

Full-size VGG16 models cost ~2 s each to build on a small CPU (the 102M-weight ``classifier.0`` dominates),
so the few models the suites need are built once per session and shared read-only; a test that must
change weights takes a ``copy.deepcopy`` (``fresh_se10``), which is four times cheaper than a new build.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch  # noqa: E402 - after the Qt platform is set
from torch import nn  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared`` (``/work/shared`` here, beside the clone in CI); skip when absent."""
    d = REPO_ROOT.parent / "shared"
    if not d.is_dir():
        pytest.skip(f"shared folder not found at {d}")
    return d


@pytest.fixture(scope="session")
def photos(shared_dir: Path) -> Path:
    d = shared_dir / "data" / "photos"
    if not d.is_dir():
        pytest.skip(f"sample photos not found at {d}")
    return d


@pytest.fixture
def x32() -> torch.Tensor:
    """A tiny batch (B=3, 32x32): the smallest input VGG16's five max-pools accept."""
    g = torch.Generator().manual_seed(1234)
    return torch.randn(3, 3, 32, 32, generator=g)


@pytest.fixture(scope="session")
def se10() -> nn.Module:
    """A random VGG16_SE(num_classes=10) in eval mode, shared read-only across the session."""
    from sevgg_gui.models.vgg import VGG16_SE

    torch.manual_seed(0)
    return VGG16_SE(num_classes=10).eval()


@pytest.fixture
def fresh_se10(se10: nn.Module) -> nn.Module:
    """A private copy of ``se10`` that a test may modify."""
    return copy.deepcopy(se10)


@pytest.fixture(scope="session")
def tv_vgg16() -> nn.Module:
    """torchvision's VGG16 with random (torchvision-initialised) weights, eval mode, shared read-only."""
    import torchvision

    torch.manual_seed(1)
    return torchvision.models.vgg16().eval()


def hook_count(model: nn.Module) -> int:
    """Forward hooks and pre-hooks on every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture
def count_hooks() -> Callable[[nn.Module], int]:
    return hook_count


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "\r" not in text and "Traceback" not in text


@pytest.fixture
def is_one_line() -> Callable[[str], bool]:
    return one_line


@pytest.fixture(scope="session")
def article10() -> nn.Module:
    """The article's own VGG16_SE(num_classes=10), eval mode, shared read-only.

    The article's model gets PyTorch's default init, under which activations fade with depth; the
    convs are re-initialised as torchvision does and the SE excitation weights spread out, so that outputs
    and gates vary clearly from image to image and a wrong layer would show.
    """
    from article_reference import VGG16_SE as ArticleVGG16SE
    from article_reference import SEBlock as ArticleSEBlock

    torch.manual_seed(2)
    model = ArticleVGG16SE(num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.normal_(m.bias, 0, 0.01)
            elif isinstance(m, ArticleSEBlock):
                m.fc[0].weight.mul_(4.0)
                m.fc[2].weight.mul_(4.0)
    return model.eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and two OpenMP threads on a shared 2-core
    machine can run 30x slower than one; restored afterwards (used by the training-side tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fmnist(shared_dir: Path) -> str:
    """Fashion-MNIST from ../shared as a `--data` spec; skips where shared/ is absent."""
    d = shared_dir / "data" / "fashion-mnist"
    if not (d / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {d}")
    return f"fashionmnist:{d}"


@pytest.fixture(scope="session")
def slim_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random slim (width 0.125) 10-class VGG16-SE at 32 px, saved as `sevgg train` saves it, its last
    layer scaled to trained-like logits (~1-10) so exports and quantization are compared meaningfully."""
    from sevgg_gui.checkpoints import save_checkpoint
    from sevgg_gui.training.models import build_model

    torch.manual_seed(0)
    model = build_model("vgg16_se", 10, width=0.125)
    with torch.no_grad():
        model.classifier[6].weight.mul_(100.0)
    path = tmp_path_factory.mktemp("slim") / "slim.pth"
    save_checkpoint(
        model, path, class_names=[f"c{i}" for i in range(10)], arch="vgg16_se", width=0.125,
        reduction=16, dropout=0.5, input_size=32,
    )  # fmt: skip
    return path

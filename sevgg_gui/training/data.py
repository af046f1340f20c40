"""Datasets for training and evaluation: an ImageFolder tree, or Fashion-MNIST / CIFAR-10 from local files.

A data spec is ``KIND:PATH`` (``fashionmnist:/data/fmnist``, ``cifar10:/data/cifar``,
``imagefolder:/photos``) or just a folder (ImageFolder). Nothing is ever downloaded: torchvision's
FashionMNIST runs with ``download=False``, CIFAR-10's pickled batches are read with a restricted
unpickler (arrays and lists only), and gzipped or tarred files are unpacked once into a cache folder
(the source may be read-only).

Every image becomes RGB (grayscale is repeated to 3 channels) and is normalised with the ImageNet
statistics, because that is what the app's :class:`~sevgg_gui.images.Preprocess` feeds the model:
evaluation uses that very class, so ``sevgg eval`` measures what the app will see.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..images import IMAGE_SUFFIXES, Preprocess, load_image

Kind = Literal["imagefolder", "fashionmnist", "cifar10"]
Split = Literal["train", "val", "test"]
KINDS: tuple[str, ...] = ("imagefolder", "fashionmnist", "cifar10")
AUGMENTATIONS: tuple[str, ...] = ("none", "light", "strong")
# Native resolution of the small datasets; photos get the ImageNet crop.
DEFAULT_INPUT_SIZE: dict[str, int] = {"imagefolder": 224, "fashionmnist": 32, "cifar10": 32}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(ValueError):
    """A data spec or folder that cannot be used; the message is one line."""


@dataclass(frozen=True)
class DataSpec:
    kind: Kind
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_data_spec(spec: str | os.PathLike[str] | DataSpec) -> DataSpec:
    """``KIND:PATH`` or a bare folder (ImageFolder); the path must exist."""
    if isinstance(spec, DataSpec):
        return spec
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in KINDS:
        spec_kind, path = kind.lower(), Path(rest).expanduser()
    elif sep and kind.isalpha() and len(kind) > 1 and not Path(text).exists():
        raise DataError(f"unknown dataset kind {kind!r}: use {', '.join(KINDS)} (KIND:PATH) or a folder")
    else:
        spec_kind, path = "imagefolder", Path(text).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return DataSpec(spec_kind, path)  # type: ignore[arg-type]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sevgg_gui" / "datasets"


# ----------------------------------------------------------------------------------- transforms
class ToRGB:
    """PIL image of any mode -> RGB PIL image (grayscale repeated to 3 channels); picklable for workers."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")


class EvalTransform:
    """The app's preprocessing: by default VGG16-SE's (resize shorter side to S*256/224, centre crop S,
    ImageNet norm); ``pre``: a model's own (timm's data config, torchvision weights' transforms)."""

    def __init__(self, size: int, pre: Preprocess | None = None) -> None:
        self.pre = pre or Preprocess(crop_size=size, resize_size=resize_for(size), mean=MEAN, std=STD)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        rgb = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
        return self.pre(rgb)


def resize_for(size: int) -> int:
    """Shorter-side size before the centre crop: the ImageNet 256/224 ratio, as ``zoo.LoadedModel``."""
    return round(size * 256 / 224)


def build_transform(size: int, augment: str = "none") -> Callable[[Image.Image], torch.Tensor]:
    """``none``: the evaluation transform; ``light``: random crop + flip; ``strong``: random resized
    crop + flip + TrivialAugment + random erasing (for small data sets that overfit, article 9.2)."""
    from torchvision import transforms as T

    if augment == "none":
        return EvalTransform(size)
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if augment == "light":
        return T.Compose(
            [ToRGB(), T.Resize(resize_for(size)), T.RandomCrop(size), T.RandomHorizontalFlip(), *norm]
        )
    if augment == "strong":
        return T.Compose(
            [
                ToRGB(),
                T.RandomResizedCrop(size, scale=(0.35, 1.0)),
                T.RandomHorizontalFlip(),
                T.TrivialAugmentWide(),
                *norm,
                T.RandomErasing(p=0.25),
            ]
        )
    raise DataError(f"unknown augmentation {augment!r}: use {', '.join(AUGMENTATIONS)}")


# ----------------------------------------------------------------------------------- subsets
class TransformedSubset(Dataset):
    """``base[indices]`` with a transform: train and val share one base but not the augmentation."""

    def __init__(self, base: Any, indices: Sequence[int], transform: Callable[[Any], Any] | None) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.transform = transform
        all_targets = _targets(base)
        self.targets = [int(all_targets[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img, y = self.base[self.indices[i]]
        return (self.transform(img) if self.transform else img), int(y)


def _targets(base: Any) -> list[int]:
    t = base.targets
    return t.tolist() if isinstance(t, torch.Tensor) else list(t)


def split_indices(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified, seeded train/val split: the same seed gives the same split on every machine."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val fraction must be in [0, 1), got {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    t = torch.as_tensor(list(targets))
    train: list[int] = []
    val: list[int] = []
    for c in torch.unique(t).tolist():
        idx = torch.nonzero(t == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_val = round(len(idx) * val_fraction)
        if val_fraction > 0 and n_val == 0 and len(idx) > 1:
            n_val = 1
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def limit_indices(indices: Sequence[int], targets: Sequence[int], n: int | None, seed: int) -> list[int]:
    """At most ``n`` indices, balanced over classes (round-robin of seeded per-class shuffles)."""
    if n is None or n >= len(indices):
        return list(indices)
    if n < 1:
        raise DataError(f"limit must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed + 7919)
    per_class: dict[int, list[int]] = {}
    for i in indices:
        per_class.setdefault(int(targets[i]), []).append(int(i))
    queues = []
    for c in sorted(per_class):
        items = per_class[c]
        queues.append([items[j] for j in torch.randperm(len(items), generator=g).tolist()])
    out: list[int] = []
    depth = 0
    while len(out) < n:
        for q in queues:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
        depth += 1
    return sorted(out)


# ----------------------------------------------------------------------------------- sources
def _pil_loader(path: str) -> Image.Image:
    """The core's safe decoder (EXIF orientation, 16-bit, alpha on white), as a PIL image."""
    return Image.fromarray(load_image(path))


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _image_folder(root: Path) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), loader=_pil_loader, is_valid_file=_is_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: not an ImageFolder tree ({str(exc).splitlines()[0]})") from None


def _cache_key(path: Path) -> str:
    """Cache folder name: the source path plus its files' sizes and times, so a changed source re-unpacks."""
    h = hashlib.sha256(str(path.resolve()).encode())
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress atomically: concurrent DDP ranks or an interrupted run never see half a file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(dst.parent / f".{dst.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as out, gzip.open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mnist_root(path: Path, cache_dir: Path | None = None, name: str = "FashionMNIST") -> Path:
    """A torchvision root for ``name`` (``root/name/raw/<files>``) made from ``path``.

    ``path`` may already be such a root, the ``name`` or ``raw`` folder, or a flat folder holding the
    four IDX files, plain or ``.gz`` (the layout of Zalando's repository and of Debian's package); the
    latter are unpacked into ``cache_dir``.
    """
    path = Path(path)
    candidates = [path]
    if path.name == name:
        candidates.append(path.parent)
    if path.name == "raw" and path.parent.name == name:
        candidates.append(path.parent.parent)
    for root in candidates:
        if all((root / name / "raw" / f).is_file() for f in MNIST_FILES):
            return root
    if not path.is_dir():
        raise DataError(f"{path}: not a folder (expected the {name} IDX files, plain or .gz)")
    target = Path(cache_dir or default_cache_dir()) / f"{name}-{_cache_key(path)}"
    raw = target / name / "raw"
    for f in MNIST_FILES:
        if (raw / f).is_file():
            continue
        plain, gz = path / f, path / f"{f}.gz"
        if gz.is_file():
            _gunzip(gz, raw / f)
        elif plain.is_file():
            raw.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plain, raw / f)
        else:
            raise DataError(f"{path}: {f}[.gz] not found (expected the four {name} IDX files)")
    return target


def cifar10_root(path: Path, cache_dir: Path | None = None) -> Path:
    """A torchvision root holding ``cifar-10-batches-py``, unpacking ``cifar-10-python.tar.gz`` if given."""
    path = Path(path)
    if (path / "cifar-10-batches-py").is_dir():
        return path
    if path.name == "cifar-10-batches-py" and path.is_dir():
        return path.parent
    tar = path if path.is_file() else path / "cifar-10-python.tar.gz"
    if not tar.is_file():
        raise DataError(f"{path}: no cifar-10-batches-py folder or cifar-10-python.tar.gz")
    target = Path(cache_dir or default_cache_dir()) / f"cifar10-{_cache_key(tar.parent)}"
    if not (target / "cifar-10-batches-py").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".cifar10.", dir=target.parent))  # same filesystem: atomic rename
        try:
            with tarfile.open(tar) as tf:
                tf.extractall(tmp, filter="data")
            target.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / "cifar-10-batches-py", target / "cifar-10-batches-py")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a data file must not be able to run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if module.startswith("numpy") and name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's _reconstruct, whatever its module
        return super().find_class(module, name)


class CIFAR10Files(Dataset):
    """CIFAR-10 from torchvision's ``cifar-10-batches-py`` files, MD5s checked as torchvision does, read
    with a restricted unpickler instead of ``pickle.load`` (those files are pickles)."""

    def __init__(self, root: str | Path, train: bool = True) -> None:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity

        folder = Path(root) / CIFAR10.base_folder
        self.data_list = CIFAR10.train_list if train else CIFAR10.test_list
        chunks, targets = [], []
        for name, md5 in [*self.data_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]:
            if VERIFY_MD5 and not check_integrity(str(folder / name), md5):
                raise DataError(f"{folder / name}: missing or corrupted (MD5 differs from CIFAR-10's)")
        for name, _md5 in self.data_list:
            entry = self._load(folder / name)
            chunks.append(np.asarray(entry["data"], dtype=np.uint8))
            targets += [int(t) for t in entry.get("labels", entry.get("fine_labels", []))]
        self.data = np.vstack(chunks).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = targets
        self.classes = [str(c) for c in self._load(folder / CIFAR10.meta["filename"])[CIFAR10.meta["key"]]]

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        try:
            with open(path, "rb") as f:
                obj = _ArrayUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataError(f"{path}: not a CIFAR-10 batch ({str(exc).splitlines()[0][:100]})") from None
        return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[i]), self.targets[i]


VERIFY_MD5 = True  # tests switch it off to read small synthetic batches


def _torchvision_split(spec: DataSpec, train: bool, cache_dir: Path | None) -> Any:
    from torchvision.datasets import FashionMNIST

    if spec.kind == "cifar10":
        return CIFAR10Files(cifar10_root(spec.path, cache_dir), train=train)
    try:
        return FashionMNIST(str(mnist_root(spec.path, cache_dir)), train=train, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"{spec}: {str(exc).splitlines()[0]}") from None


# ----------------------------------------------------------------------------------- the bundle
@dataclass
class Datasets:
    """The splits a run needs; ``test`` is the official test split or a ``test``/``val`` folder."""

    spec: DataSpec
    class_names: list[str]
    input_size: int
    train: TransformedSubset | None = None
    val: TransformedSubset | None = None
    test: TransformedSubset | None = None

    def split(self, name: Split) -> TransformedSubset:
        ds = getattr(self, name)
        if ds is None:
            raise DataError(f"{self.spec}: no {name} split")
        return ds


def _folder_layout(root: Path) -> dict[str, Path]:
    """``root/train`` (+ ``val``/``valid``/``validation``, ``test``) or a flat tree of class folders."""
    if not (root / "train").is_dir():
        return {"all": root}
    out = {"train": root / "train"}
    for name in ("val", "valid", "validation"):
        if (root / name).is_dir():
            out["val"] = root / name
            break
    if (root / "test").is_dir():
        out["test"] = root / "test"
    return out


def load_datasets(
    spec: str | DataSpec,
    *,
    input_size: int | None = None,
    augment: str = "light",
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    val_limit: int | None = None,
    cache_dir: str | Path | None = None,
    splits: Sequence[Split] = ("train", "val"),
    preprocess: Preprocess | None = None,
) -> Datasets:
    """Build the requested splits of a data spec.

    Train and val come from the training data with a stratified seeded split (``val_fraction``),
    unless an ImageFolder tree has its own ``val`` folder. ``limit`` caps the training split and
    ``val_limit`` the others (class-balanced subsets, for quick runs). ``preprocess``: the evaluation
    transform of a model that brings its own (size, resize, interpolation, mean/std); without it,
    VGG16-SE's at ``input_size``.
    """
    spec = parse_data_spec(spec)
    size = int(preprocess.crop_size if preprocess else input_size or DEFAULT_INPUT_SIZE[spec.kind])
    if size < 32 and preprocess is None:
        raise DataError(f"input size {size} is too small: VGG's five 2x2 max-pools need at least 32")
    cache = Path(cache_dir) if cache_dir else None
    eval_tf = EvalTransform(size, preprocess) if preprocess else build_transform(size, "none")
    train_tf = eval_tf if augment == "none" else build_transform(size, augment)
    want = set(splits)
    out: dict[str, TransformedSubset] = {}

    def make(base: Any, idx: Sequence[int], tf: Any, cap: int | None) -> TransformedSubset:
        return TransformedSubset(base, limit_indices(idx, _targets(base), cap, seed), tf)

    if spec.kind in ("fashionmnist", "cifar10"):
        names: list[str] = []
        if want & {"train", "val"}:
            base = _torchvision_split(spec, True, cache)
            names = list(base.classes)
            tr, va = split_indices(_targets(base), val_fraction, seed)
            if "train" in want:
                out["train"] = make(base, tr, train_tf, limit)
            if "val" in want:
                out["val"] = make(base, va, eval_tf, val_limit)
        if "test" in want:
            base = _torchvision_split(spec, False, cache)
            names = list(base.classes)
            out["test"] = make(base, range(len(base)), eval_tf, val_limit)
    else:
        if not spec.path.is_dir():
            raise DataError(f"{spec.path}: not a folder (an ImageFolder tree of class folders is expected)")
        layout = _folder_layout(spec.path)
        main = _image_folder(layout.get("train", layout.get("all", spec.path)))
        names = list(main.classes)
        held_out: tuple[Any, list[int]] | None = None
        if "val" in layout:
            vbase = _image_folder(layout["val"])
            _same_classes(names, vbase.classes, layout["val"])
            held_out = (vbase, list(range(len(vbase))))
            tr = list(range(len(main)))
        else:
            tr, va = split_indices(_targets(main), val_fraction, seed)
            held_out = (main, va)
        if "train" in want:
            out["train"] = make(main, tr, train_tf, limit)
        if "val" in want:
            out["val"] = make(held_out[0], held_out[1], eval_tf, val_limit)
        if "test" in want:
            if "test" in layout:
                tbase = _image_folder(layout["test"])
                _same_classes(names, tbase.classes, layout["test"])
                out["test"] = make(tbase, range(len(tbase)), eval_tf, val_limit)
            else:
                out["test"] = make(held_out[0], held_out[1], eval_tf, val_limit)
    for name, ds in out.items():
        if len(ds) == 0 and name == "train":
            raise DataError(f"{spec}: the {name} split is empty")
    return Datasets(spec, names, size, **out)


def _same_classes(expected: list[str], got: list[str], where: Path) -> None:
    if list(got) != list(expected):
        raise DataError(f"{where}: class folders {list(got)[:5]} differ from train's {expected[:5]}")

"""The sample photos and the demo clip that ship inside the package (package data), so an installed
`sevgg-gui` opens on them as a clone does. Read through importlib.resources, never a path beside the
package: a wheel install has no repository around it.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib.resources import as_file, files
from pathlib import Path

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def bundled_path(*parts: str) -> Path:
    """A real filesystem path to a bundled resource (OpenCV and the folder source need one). A normal
    install (unpacked wheel, editable, clone) already is one; a zipped install is extracted once for
    the life of the process."""
    ref = files("sevgg_gui").joinpath("resources", *parts)
    if isinstance(ref, Path):
        return ref
    return _extracted.enter_context(as_file(ref))  # directories need Python >= 3.12 here


SAMPLES: Path = bundled_path("samples")  # five photos and their LICENSES.md
DEMO_CLIP: Path = bundled_path("demo_pan.avi")

"""Load a copy of a flashtile kernel module from another file (an earlier commit's
version, or a source-edited one) as a real module, so that Gluon / Triton can read its
source, for side-by-side timing in one process (gluon_bwd_ablate.py,
gluon_fwd_versions.py)."""

from __future__ import annotations

import importlib.util
import os
import sys


def load_copy(path: str, name: str, folder: str, edit=None):
    """Module `name` from the source at `path` (its relative imports made absolute),
    after `edit(source)` if given; written to `folder`."""
    src = open(path).read().replace("from . import", "from flashtile.kernels import")
    src = src.replace("from .", "from flashtile.kernels.")
    target = os.path.join(folder, f"{name}.py")
    with open(target, "w") as f:
        f.write(edit(src) if edit else src)
    spec = importlib.util.spec_from_file_location(name, target)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod

"""CPU environment set-up only (installed into .venv by the Makefile when torch is a CPU build).

The only torchvision matching torch 2.13 is a CUDA build; on the CPU torch its C extension cannot
register `torchvision::nms`, and `import torchvision` (hence open_clip, transformers) fails with
"operator torchvision::nms does not exist". Registering the missing schemas before the first import
makes the transforms and models work; `torchvision.ops` stays unusable. A GPU host with matching
CUDA wheels does not get this file. The hook is lazy: nothing is imported until torchvision is.
"""

from __future__ import annotations

import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBS: list = []  # torch.library.Library registrations live as long as these objects


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            if torch.version.cuda is None:
                lib = torch.library.Library("torchvision", "FRAGMENT")
                for schema in _SCHEMAS:
                    lib.define(schema)
                _LIBS.append(lib)
        return None


if not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
    sys.meta_path.insert(0, _BeforeTorchvision())

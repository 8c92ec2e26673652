"""Install env/torchvision_cpu_shim.py into this interpreter's site-packages, on CPU-only torch only."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import torch

site = Path(sysconfig.get_paths()["purelib"])
if torch.version.cuda is None:
    shutil.copy(Path(__file__).with_name("torchvision_cpu_shim.py"), site / "torchvision_cpu_shim.py")
    (site / "torchvision_cpu_shim.pth").write_text("import torchvision_cpu_shim\n")
    print(f"CPU torch {torch.__version__}: torchvision shim installed in {site}")
else:
    for name in ("torchvision_cpu_shim.py", "torchvision_cpu_shim.pth"):
        (site / name).unlink(missing_ok=True)
    print(f"CUDA torch {torch.__version__}: no torchvision shim needed")

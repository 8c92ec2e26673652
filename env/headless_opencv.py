"""Put the headless OpenCV build back on top after scenedetect pulled in the GUI `opencv-python`.

Both wheels install the same `cv2` package; whichever is written last wins, and the GUI one needs
libGL, which servers lack. Remove the GUI wheel and reinstall the headless one at its own version.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys


def main() -> None:
    try:
        md.version("opencv-python")
    except md.PackageNotFoundError:
        return
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "uninstall", "-y", "-q", "opencv-python"], check=True)
    version = md.version("opencv-python-headless")
    subprocess.run(
        [*pip, "install", "-q", "--force-reinstall", "--no-deps", f"opencv-python-headless=={version}"], check=True
    )
    print(f"opencv: headless {version} restored over the GUI build scenedetect pulled in")


if __name__ == "__main__":
    main()

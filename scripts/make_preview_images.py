"""Make the README's preview images in docs/ (deterministic; run from anywhere).

    python scripts/make_preview_images.py

Each image is what the README's command draws, run from the repository's root:

- docs/preview-element.png:
  tensor-dropout preview samples/batch_nchw.npy -o docs/preview-element.png -p 0.5 --seed 7
- docs/preview-channel.png: the same with --variant channel.

tests/test_preview.py checks that the committed images are what this script draws now.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dropout_core import preview  # noqa: E402

SOURCE = "samples/batch_nchw.npy"  # relative, so the titles do not depend on the checkout
IMAGES = {
    "docs/preview-element.png": {"p": 0.5, "seed": 7},
    "docs/preview-channel.png": {"p": 0.5, "seed": 7, "variant": "channel"},
}


def draw(name: str, output: str | None = None, force: bool = False):
    """The preview behind docs image ``name`` (drawn from the repository's root)."""
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        return preview(SOURCE, output, force=force, **IMAGES[name])
    finally:
        os.chdir(here)


def main() -> None:
    for name in IMAGES:
        draw(name, name, force=True)
        print(f"wrote {name}")


if __name__ == "__main__":
    main()

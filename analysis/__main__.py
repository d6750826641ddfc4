"""``python -m analysis``: the main job of ./run_all.sh.

Loads the embedded default (the zoo's ``shapes-llava``, or a tiny random LLaVA when the zoo is
not built) and prints what the VLM layer finds for one image and question.
"""

from __future__ import annotations

import argparse

from analysis.errors import ModelNotFoundError
from analysis.models import load_vlm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:shapes-llava", help="hub id, folder or zoo:<name>")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    try:
        vlm = load_vlm(args.model, device=args.device)
    except ModelNotFoundError as err:
        from analysis.testing import tiny_vlm

        print(f"[smoke] {err}\n[smoke] falling back to a tiny random LLaVA")
        vlm = tiny_vlm("llava")
    from PIL import Image

    image = Image.new("RGB", (96, 64), (40, 120, 200))
    prepared = vlm.prepare(image, "what color is the circle ?")
    print(vlm)
    print(f"prompt: {prepared.prompt!r}")
    print(f"{prepared.length} tokens: {len(prepared.image_positions)} image, "
          f"{len(prepared.question_positions)} question, last at {prepared.last_position}")
    print(f"patch grids: {prepared.grids}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

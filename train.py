"""Train CLIP, LaCLIP, LaCLIP-MT, CLIPS or PC-CLIP: ``accelerate launch train.py --config configs/<run>.yaml [--flag value ...]``.

The same as ``langclip train``: bad input is one error line without a traceback (``--debug`` shows it).
"""

import sys

from langclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

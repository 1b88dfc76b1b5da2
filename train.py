"""Train CLIP, LaCLIP, LaCLIP-MT, CLIPS or PC-CLIP: ``accelerate launch train.py --config configs/<run>.yaml [--flag value ...]``."""

from langclip.training.arguments import parse_train_args
from langclip.training.trainer import train

if __name__ == "__main__":
    train(*parse_train_args())

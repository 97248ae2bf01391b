"""The agents tests open pygame windows headless."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame windows stay headless
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

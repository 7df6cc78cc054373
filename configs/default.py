"""The shared base config, defined in cnnjax/defaults.py (the library reads it too): every field the training
loop reads, with its default and a comment. Experiment configs start from `default.get_config()`.

Not run on its own: `python -m experiments.main --config configs/resnet.py --workdir runs/resnet` runs the
default experiment on top of it. The fields: docs/guide/running.md.
"""
from cnnjax.defaults import get_config  # noqa: F401 (the base every config file builds on)

"""Transfer from a CIFAR ResNet-20 trained on Fashion-MNIST classes 0-4 to new classes, with few labels.

  python -m experiments.sweep --config configs/transfer.py:fashion_finetune --workdir runs/transfer/fashion_finetune
  python -m experiments.transfer_report --runs runs/transfer --out docs/transfer_results

Measured (test top-1, mean over 3 label subsets; docs/transfer.md): Fashion classes 5-9 at 1 / 5 / 10 labels per
class: from scratch 40.8 / 68.7 / 76.0, linear probe 56.3 / 74.1 / 81.6, fine-tune all 58.9 / 78.8 / 84.7,
early stages frozen 59.2 / 75.6 / 82.4; all labels 92.3 / 93.0 / 93.0 / 91.3.

Pretraining (the `init.checkpoint` of every transfer run; BASE below):
  python -m experiments.main --config configs/resnet.py:fashion_mnist --workdir runs/fashion_base04 \
      '--config.dataset.classes=(0,1,2,3,4)' --config.num_epochs=8

Presets `<target>_<method>`: target `fashion` (Fashion-MNIST classes 5-9, relabelled 0-4, evaluated on the
novel-class images of the first half of the test split: 2,470) or `digits` (scikit-learn's 8x8 digits, 10
classes, resized to 28x28 like the pretraining images, 355 test images); method
  scratch   a fresh ResNet-20, lr 0.1
  probe     the pretrained backbone, the head fitted by L-BFGS logistic regression (linear_probe, l2 1e-3)
  finetune  every layer from the pretrained weights but a new head, lr 0.01 (head x10)
  frozen    the same with the stem, stage 1 and stage 2 frozen (their batch norms use running statistics)
The `sweep` is the label budget: 1, 5 and 10 training examples per class (3 subsets each: dataset.subset_seed)
for 50 steps, and every training example for 100 steps of 128 (0.43 epochs of the 30,000 Fashion images, 9 of
the 1,442 digits: the CPU budget of docs/transfer.md). Nothing is tuned. Results: docs/transfer.md.

  for p in fashion_scratch fashion_probe ...; do
    python -m experiments.sweep --config configs/transfer.py:$p --workdir runs/transfer/$p; done
"""
from cnnjax.errors import ConfigError
from configs import resnet

BASE = "runs/fashion_base04"
TARGETS = ("fashion", "digits")
METHODS = ("scratch", "probe", "finetune", "frozen")
PRESETS = tuple(f"{t}_{m}" for t in TARGETS for m in METHODS)
FEW_SHOT_STEPS, ALL_STEPS = 50, 100
# (train_per_class, subset_seed, batch_size, num_train_steps): the batch is at most the k-shot training set.
# In the order the sweep runs them: one subset of each budget, all labels, then a second and a third subset.
_few = lambda seed: tuple((k, seed, b, FEW_SHOT_STEPS) for k, b in ((1, 5), (5, 25), (10, 50)))
BUDGETS = _few(0) + ((-1, 0, 128, ALL_STEPS),) + _few(1) + _few(2)


def get_config(preset: str = "fashion_finetune"):
  if preset not in PRESETS:
    raise ConfigError(f"unknown preset {preset!r} for configs/transfer.py; known: {PRESETS}")
  target, method = preset.split("_")
  c = resnet.get_config("fashion_mnist")       # ResNet-20, 28x28, SGD + Nesterov, cosine, batch 128
  if target == "fashion":
    c.dataset.classes = (5, 6, 7, 8, 9)
    c.dataset.eval_split = "test[:50%]"
  else:
    c.dataset.name = "digits"
    c.dataset.augment = "pad_crop"             # no flips: a mirrored digit is another symbol
  c.dataset.image_size = 28
  c.dataset.relabel = bool(c.dataset.classes)
  c.eval_every_steps = 10 ** 6                 # only at the last step
  c.checkpoint_every_steps = 10 ** 6           # ... and a checkpoint there
  c.log_every_steps = 10
  c.init.checkpoint = BASE
  c.init.dont_load = ("^params/head/",)
  if method == "scratch":
    c.init.checkpoint = ""
  elif method == "probe":
    c.linear_probe.enabled = True
    c.linear_probe.l2 = 1e-3
  else:
    c.learning_rate = 0.01
    c.lr_mults = (("^head/", 10.0),)
    if method == "frozen":
      c.frozen = "^(stem_|stage1_|stage2_)"
  c.sweep = ((("dataset.train_per_class", "dataset.subset_seed", "batch_size", "num_train_steps"), BUDGETS),)
  return c

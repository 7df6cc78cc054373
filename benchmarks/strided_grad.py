"""Input gradient of strided convolutions: XLA's (a convolution over the zero-dilated output gradient) against
`cnnjax.layers.polyphase.polyphase_input_grad`, on the stride-2 layers of ResNet-18 CIFAR and ResNet-50.

  python -m benchmarks.strided_grad [--repeats 3]

Prints the median over repeats of each one's mean milliseconds (3 calls), interleaved, and checks that the two agree.
The `Conv` module uses
the polyphase path on CPU for outputs of 8x8 and more (below that it measured slower).
"""
import argparse
import statistics

import jax
import numpy as np

from benchmarks.conv import _time
from cnnjax.layers.polyphase import _conv, polyphase_input_grad

P1, P0 = ((1, 1), (1, 1)), ((0, 0), (0, 0))
# (name, batch, H=W, Cin, Cout, k, padding), all stride 2
SHAPES = [("r18c 3x3 32x32 64->128", 128, 32, 64, 128, 3, P1), ("r18c 3x3 16x16 128->256", 128, 16, 128, 256, 3, P1),
          ("r18c 3x3 8x8 256->512", 128, 8, 256, 512, 3, P1), ("r18c 1x1 32x32 64->128", 128, 32, 64, 128, 1, P0),
          ("r50 3x3 56x56 128", 16, 56, 128, 128, 3, P1), ("r50 3x3 28x28 256", 16, 28, 256, 256, 3, P1),
          ("r50 3x3 14x14 512", 16, 14, 512, 512, 3, P1), ("r50 1x1 56x56 256->512", 16, 56, 256, 512, 1, P0)]


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; input gradient, median ms")
  for name, b, hw, cin, cout, k, pad in SHAPES:
    x = rng.standard_normal((b, hw, hw, cin), np.float32)
    w = rng.standard_normal((k, k, cin, cout), np.float32) * 0.05
    conv = lambda x, w, pad=pad: _conv(x, w, (2, 2), pad)
    dy = rng.standard_normal(jax.eval_shape(conv, x, w).shape, np.float32)
    xla = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
    poly = jax.jit(lambda w, dy, shape=x.shape, pad=pad: polyphase_input_grad(dy, w, shape, (2, 2), pad))
    err = float(np.abs(np.asarray(xla(x, w, dy)) - np.asarray(poly(w, dy))).max())
    a, p = [], []
    for _ in range(args.repeats):
      a.append(_time(xla, x, w, dy))
      p.append(_time(poly, w, dy))
    a, p = statistics.median(a) * 1e3, statistics.median(p) * 1e3
    print(f"{name:26s} xla {a:6.1f}  polyphase {p:6.1f}  ({a / p:4.2f}x, max |diff| {err:.1e})", flush=True)


if __name__ == "__main__":
  main()

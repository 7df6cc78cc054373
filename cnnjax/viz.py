"""Seeing inside the networks: hand-made kernels, first-layer filters, feature maps, dead maps, max-pool routing.

Every figure is drawn from an array that a function here returns, so the tests check the arrays, not the PNGs:

  filter2d / apply_kernels   the course's hand-made kernels (KERNELS) applied with the project's convolution
  maxpool_routing            where a max-pool sends its gradient (only to each window's maximum)
  conv_paths, first_conv_kernel   the convolutions in call order; the first one's kernel (H, W, I, O)
  feature_maps               outputs of chosen modules for a batch, through flax's `capture_intermediates`
  dead_maps                  per layer, the channels that are zero everywhere over a batch

Cross-correlation, not convolution: like every deep-learning "convolution", `filter2d` computes
y[i, j] = sum_{a, b} x[i + a - r, j + b - r] k[a, b] (no flip; zero padding r = size // 2), which is
`scipy.ndimage.correlate(x, k, mode='constant')` and `scipy.signal.convolve2d(x, flip(k), mode='same')`. The two
agree exactly when the kernel is unchanged by a 180-degree turn (k[::-1, ::-1] == k): box, Gaussian, sharpen,
Laplacian, and also the lecture's example kernel, whose rows and columns are not symmetric but which is
point-symmetric. Sobel x turns into -Sobel x, so a convolution flips the sign of its edges, and an off-centre
one-hot kernel shifts the image the opposite way.
"""
import re
from typing import Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from cnnjax import build, data, layers
from cnnjax.errors import ConfigError
from cnnjax import workdir as workdir_lib
from cnnjax.data.pipeline import preprocess

# --- the course's hand-made kernels (cross-correlation kernels, row = y, column = x) ---------------------------
BOX_BLUR = np.full((3, 3), 1 / 9)
GAUSSIAN_SIGMA, GAUSSIAN_SIZE = 1.0, 5


def gaussian_kernel(sigma: float = GAUSSIAN_SIGMA, size: int = GAUSSIAN_SIZE) -> np.ndarray:
  """exp(-(x^2 + y^2) / (2 sigma^2)) on a size x size grid centred on 0, normalised to sum 1."""
  r = np.arange(size) - (size - 1) / 2
  g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
  return g / g.sum()


GAUSSIAN_BLUR = gaussian_kernel()
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], float)
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)     # > 0 where brightness grows to the right
SOBEL_Y = SOBEL_X.T.copy()                                           # > 0 where brightness grows downwards
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
LECTURE_EXAMPLE = np.array([[1, 0, -1], [0, 1, 0], [-1, 0, 1]], float)   # not mirror- but point-symmetric

KERNELS = {"box blur 3x3": BOX_BLUR, f"Gaussian blur {GAUSSIAN_SIZE}x{GAUSSIAN_SIZE}, sigma={GAUSSIAN_SIGMA:g}":
           GAUSSIAN_BLUR, "sharpen": SHARPEN, "Sobel x": SOBEL_X, "Sobel y": SOBEL_Y, "Laplacian": LAPLACIAN,
           "lecture example": LECTURE_EXAMPLE}
GRADIENT_MAGNITUDE = "Sobel magnitude sqrt(Gx^2 + Gy^2)"

# The lecture's max-pool example (2x2 windows, stride 2).
LECTURE_POOL_INPUT = np.array([[2, 3, 4, 0], [1, 5, 3, 2], [0, 4, 2, 3], [1, 0, 6, 1]], float)


def filter2d(image, kernel, impl: str = "direct") -> np.ndarray:
  """Cross-correlation of a 2-D image with an odd-sized 2-D kernel, zero padding, same output size, computed by
  `cnnjax.layers.conv_general_dilated(..., impl=impl)` in float32 at HIGHEST precision."""
  image, kernel = np.asarray(image, np.float32), np.asarray(kernel, np.float32)
  if image.ndim != 2 or kernel.ndim != 2:
    raise ValueError(f"filter2d takes a 2-D image and a 2-D kernel, got shapes {image.shape} and {kernel.shape}")
  if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
    raise ValueError(f"kernel shape {kernel.shape}: odd sizes only (the output pixel is the kernel's centre)")
  pad = [(kernel.shape[0] // 2,) * 2, (kernel.shape[1] // 2,) * 2]
  y = layers.conv_general_dilated(image[None, :, :, None], kernel[:, :, None, None], (1, 1), pad,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST,
                                  impl=impl)
  return np.asarray(y[0, :, :, 0])


def apply_kernels(image, impl: str = "direct") -> Dict[str, np.ndarray]:
  """{kernel name: filter2d(image, kernel)} for every kernel in KERNELS, plus the Sobel gradient magnitude."""
  out = {name: filter2d(image, k, impl) for name, k in KERNELS.items()}
  out[GRADIENT_MAGNITUDE] = np.hypot(out["Sobel x"], out["Sobel y"])
  return out


def maxpool_routing(x, size: int = 2, stride: int = 2):
  """(pooled, gradient): a max-pool of the 2-D array x and the gradient of sum(pooled) with respect to x, which
  is 1 at each window's maximum and 0 elsewhere (the backward pass routes each output's gradient there)."""
  x = jnp.asarray(x, jnp.float32)[None, :, :, None]
  f = lambda v: layers.max_pool(v, size, stride)
  pooled, vjp = jax.vjp(f, x)
  (grad,) = vjp(jnp.ones_like(pooled))
  return np.asarray(pooled[0, :, :, 0]), np.asarray(grad[0, :, :, 0])


# --- trained workdirs ------------------------------------------------------------------------------------------
def eval_images(config, info, split: Optional[str] = None, limit: Optional[int] = None):
  """(images, labels) of `split` (default the eval split) preprocessed as evaluation does (float32 NHWC),
  keeping `config.dataset.classes` if set; the first `limit` examples."""
  source, _ = data.get_source(config.dataset, split or config.dataset.eval_split)
  n = len(source) if limit is None else min(limit, len(source))
  pre = preprocess(config.dataset, info, config.dataset.eval_augment)
  records = [pre.random_map(dict(source[i]), np.random.default_rng(0)) for i in range(n)]
  return np.stack([r["image"] for r in records]), np.array([r["label"] for r in records])


def _path(module) -> str:
  return "/".join(module.scope.path)


def _call_order(model, input_shape, chosen) -> list:
  """Paths of the modules for which chosen(module, method_name) holds, in the order their calls return
  (abstract trace)."""
  paths = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if chosen(context.module, context.method_name):
      paths.append(_path(context.module))   # on return: a block comes after the layers inside it
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)), train=False))
  return list(dict.fromkeys(paths))


def conv_paths(model, input_shape) -> list:
  """The paths ('stage1_block1/Conv_0') of the model's convolutions in call order."""
  is_conv = lambda m, method: method == "__call__" and isinstance(m, (layers.Conv, nn.Conv))
  return _call_order(model, input_shape, is_conv)


def first_conv_kernel(model, params, input_shape) -> np.ndarray:
  """The kernel (H, W, I, O) of the first convolution the model calls."""
  first = conv_paths(model, input_shape)[0]
  return np.asarray(traverse_util.flatten_dict(params, sep="/")[first + "/kernel"])


DEFAULT_KINDS = ("Conv", "MaxPool", "AvgPool", "Subsample", "_Block", "_Inception")


def feature_maps(model, variables, images, select=None, *, batch_size: Optional[int] = None,
                 pool: bool = False) -> Dict[str, np.ndarray]:
  """{module path: output} of the modules chosen by `select` for a batch (inference mode), in call order.

  `select`: None for every convolution, pool and block (DEFAULT_KINDS), or a regex that must match a module's
  whole path (e.g. 'stem_conv|stage\\d_block\\d'). Captured with flax's `capture_intermediates` under one jit;
  `batch_size` runs the images in chunks of that size (the last one padded); `pool` averages each output over
  its spatial axes inside the jit ((n, H, W, C) -> (n, C); vectors are kept).
  """
  pattern = re.compile(select) if isinstance(select, str) else None

  def chosen(module, method_name):
    if method_name != "__call__" or not module.scope.path:
      return False
    if pattern is not None:
      return pattern.fullmatch(_path(module)) is not None
    return type(module).__name__ in DEFAULT_KINDS

  images = np.asarray(images)
  order = _call_order(model, images.shape[1:], chosen)
  if not order:
    some = _call_order(model, images.shape[1:], lambda m, method: method == "__call__" and bool(m.scope.path))
    raise ConfigError(f"select={select!r} (--layers) matches no module of {type(model).__name__}: a regex over "
                      f"whole module paths, such as {some[:8]}")

  @jax.jit
  def apply(v, x):
    state = model.apply(v, x, train=False, capture_intermediates=chosen, mutable=["intermediates"])[1]
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    outs = {p: flat[p + "/__call__"][-1] for p in order}
    return {p: o.mean(axis=tuple(range(1, o.ndim - 1))) if pool and o.ndim > 2 else o for p, o in outs.items()}

  step = batch_size or len(images)
  chunks = []
  for s in range(0, len(images), step):
    x = images[s:s + step]
    pad = np.zeros((step - len(x),) + x.shape[1:], x.dtype)
    chunks.append({p: np.asarray(o)[:len(x)] for p, o in apply(variables, np.concatenate([x, pad])).items()})
  return {p: np.concatenate([c[p] for c in chunks]) for p in order}


def dead_maps(maps: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """{layer: indices of its channels (last axis) that are exactly zero at every position of every example}."""
  return {name: np.flatnonzero(np.all(m.reshape(-1, m.shape[-1]) == 0, axis=0)) for name, m in maps.items()}


# --- figures (matplotlib Agg; each takes the arrays above) -----------------------------------------------------
def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _show(fig, ax, a, title, cmap="gray", symmetric=False, annotate=False):
  vmax = np.abs(a).max() or 1.0
  im = ax.imshow(a, cmap=cmap, vmin=-vmax if symmetric else None, vmax=vmax if symmetric else None,
                 interpolation="nearest")
  ax.set_title(title, fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  if annotate:
    for (i, j), v in np.ndenumerate(a):
      ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8, color="black",
              bbox=dict(boxstyle="round", fc="white", alpha=0.6, lw=0))


def plot_kernels(image, results: Dict[str, np.ndarray], out_png: str, title: str) -> str:
  """Input, each kernel (values written in) and its result, with colour bars."""
  plt = _plt()
  names = list(results)
  fig, axes = plt.subplots(2, len(names) + 1, figsize=(2.6 * (len(names) + 1), 5.4))
  _show(fig, axes[0, 0], image, "input")
  axes[1, 0].axis("off")
  for col, name in enumerate(names, 1):
    if name in KERNELS:
      k = KERNELS[name]
      _show(fig, axes[0, col], k, f"kernel: {name}", cmap="RdBu_r", symmetric=True, annotate=k.shape[0] <= 3)
    else:
      axes[0, col].axis("off")
      axes[0, col].text(0.5, 0.5, "Sobel x, Sobel y\n-> sqrt(Gx^2 + Gy^2)", ha="center", va="center", fontsize=9)
    signed = name not in (GRADIENT_MAGNITUDE,) and KERNELS.get(name, np.ones(1)).min() < 0
    _show(fig, axes[1, col], results[name], f"result: {name}", cmap="RdBu_r" if signed else "gray",
          symmetric=signed)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png


def plot_maxpool(x, pooled, grad, out_png: str, size: int = 2, stride: int = 2) -> str:
  """The input, the pooled output and the input gradient of sum(pooled), values written in."""
  plt = _plt()
  fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
  _show(fig, axes[0], x, "input x", cmap="viridis", annotate=True)
  _show(fig, axes[1], pooled, f"max_pool(x, {size}, stride {stride})", cmap="viridis", annotate=True)
  _show(fig, axes[2], grad, "d sum(max_pool(x)) / dx", cmap="Reds", annotate=True)
  for ax in (axes[0], axes[2]):
    for b in range(0, x.shape[0] + 1, stride):
      ax.axhline(b - 0.5, color="white", lw=2)
      ax.axvline(b - 0.5, color="white", lw=2)
  fig.suptitle("max-pool backward: each output's gradient goes only to its window's maximum", fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png


def plot_filters(kernel, out_png: str, title: str) -> str:
  """The first layer's filters, one tile each: one shared symmetric colour scale (with a colour bar) for
  grey input, min-max scaled per filter for RGB input."""
  plt = _plt()
  kernel = np.asarray(kernel)
  n, channels = kernel.shape[-1], kernel.shape[-2]
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3 + 1, rows * 1.3 + 0.6), squeeze=False)
  vmax = np.abs(kernel).max()
  im = None
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= n:
      continue
    f = kernel[..., i]
    if channels == 3:
      ax.imshow((f - f.min()) / (f.max() - f.min() + 1e-12), interpolation="nearest")
    else:
      im = ax.imshow(f[..., 0] if channels == 1 else f.mean(-1), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                     interpolation="nearest")
    ax.set_title(str(i), fontsize=7)
  if im is not None:
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03)
  fig.suptitle(title, fontsize=9)
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png


def plot_workdir_filters(workdir: str, out_png: str) -> str:
  """filters.png for a training workdir: its first convolution's filters at the newest checkpoint."""
  model, variables, config, info = build.load_workdir(workdir)
  shape = (config.dataset.image_size, config.dataset.image_size, info.image_shape[-1])
  kernel = first_conv_kernel(model, variables["params"], shape)
  return plot_filters(kernel, out_png, f"first convolution's filters {kernel.shape} (HWIO), {config.model.name} "
                      f"on {config.dataset.name}, {workdir_lib.path(workdir).name}")


def plot_feature_maps(image, maps: Dict[str, np.ndarray], out_png: str, title: str, channels: int = 8) -> str:
  """For one input (maps[name][0]), the first `channels` maps of each layer; one colour scale per row."""
  plt = _plt()
  names = list(maps)
  fig, axes = plt.subplots(len(names), channels + 1, figsize=(1.5 * (channels + 1) + 1, 1.55 * len(names)),
                           squeeze=False)
  for r, name in enumerate(names):
    m = maps[name][0]
    axes[r, 0].imshow(np.asarray(image)[..., 0] if np.ndim(image) == 3 and np.shape(image)[-1] == 1 else image,
                      cmap="gray")
    axes[r, 0].set_title("input" if r == 0 else "", fontsize=7)
    vmin, vmax = m.min(), m.max()
    im = None
    for c in range(channels):
      ax = axes[r, c + 1]
      if c < m.shape[-1]:
        im = ax.imshow(m[..., c], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{name} [{c}]" if c == 0 else f"[{c}]", fontsize=7)
    fig.colorbar(im, ax=axes[r, -1], fraction=0.046, pad=0.04)
    for ax in axes[r]:
      ax.set_xticks([])
      ax.set_yticks([])
    axes[r, 0].set_ylabel(f"{name}\n{tuple(m.shape)}", fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png


def plot_dead_maps(dead: Dict[str, np.ndarray], totals: Dict[str, int], out_png: str, title: str) -> str:
  """Per layer, the fraction of channels that are all zero over the batch (count written on each bar)."""
  plt = _plt()
  names = list(dead)
  frac = [len(dead[n]) / totals[n] for n in names]
  fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.4))
  ax.barh(range(len(names)), frac, color="tab:red")
  for i, n in enumerate(names):
    ax.text(frac[i], i, f" {len(dead[n])}/{totals[n]}", va="center", fontsize=7)
  ax.set_yticks(range(len(names)), names, fontsize=7)
  ax.invert_yaxis()
  ax.set_xlim(0, 1)
  ax.set_xlabel("fraction of channels zero on every position of every example")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png

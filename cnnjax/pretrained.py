"""torchvision's ImageNet weights in the cnnjax zoo, and a command that turns a weights file into a checkpoint.

`from_torchvision(name, state_dict) -> (module, variables)`: `name` is torchvision's model name, the module the
matching zoo model (torchvision's `alexnet` is `alexnet_owt`, `googlenet` the `layout='torchvision'` net), and
`module.apply(variables, x_nhwc, train=False)` gives the logits of torchvision's model in eval mode (for
GoogLeNet: built with `transform_input=False`; `normalization` folds that transform into the mean and std).

What the conversion takes care of: OIHW kernels to HWIO and (out, in) matrices to (in, out); the first fully
connected layer after a feature map (AlexNet's fc6 over 256x6x6, VGG's fc1 over 512x7x7, GoogLeNet's auxiliary
fc1 over 128x4x4) has its inputs reordered from torch's C,H,W flatten to the NHWC flatten, not only
transposed; batch norm's weight/bias/running_mean/running_var become scale/bias and the batch statistics
mean/var, `num_batches_tracked` is dropped. The zoo models themselves carry the rest: torch's symmetric
explicit padding (also for stride 2), batch-norm epsilon 1e-5 (1e-3 in GoogLeNet) and momentum 0.9 (torch's
0.1), GoogLeNet's ceil-mode pools, and adaptive average pooling to 6x6 / 7x7 / 4x4 at any input size.

Command: `python -m cnnjax.pretrained --model resnet50 --weights FILE --out DIR` reads a `.safetensors` file
(numpy only) or a `.pth` file (needs torch), and writes DIR/checkpoints/0/state (Orbax, `params` and
`batch_stats`, readable as a workdir by `cnnjax.checkpoint.load_numpy`) and DIR/pretrained.json (the zoo model,
its options, the class count, the preprocessing the weights expect, the source file). `load(DIR)` reads both.
"""
import datetime
import os
import re
import sys
from typing import Any, Callable, Dict, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import traverse_util

from cnnjax import checkpoint, cli, models
from cnnjax.errors import ConfigError
from cnnjax import workdir as workdir_lib
from cnnjax.models import vgg

JSON_NAME = "pretrained.json"
TORCH_PIN = "torch==2.13.0"
# torchvision's ImageNet weights (IMAGENET1K_V1): images scaled to [0, 1], resized so the shorter side is 256,
# centre-cropped to 224 and normalised per channel (the `transforms` of each weights entry).
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": 224, "resize_size": 256,
            "interpolation": "bilinear", "transform_input": False}


def _resnet_names(path, module):
  """stem_conv -> conv1, stage2_block1/Conv_0 -> layer2.0.conv1, .../Conv_3 (the projection) -> downsample.0."""
  fixed = {"stem_conv": "conv1", "stem_norm": "bn1", "head": "fc"}
  if path[0] in fixed:
    return fixed[path[0]]
  stage, block = re.fullmatch(r"stage(\d+)_block(\d+)", path[0]).groups()
  kind, index = path[1].split("_")
  prefix = f"layer{stage}.{int(block) - 1}."
  if int(index) < (3 if module.bottleneck else 2):
    return prefix + ("conv" if kind == "Conv" else "bn") + str(int(index) + 1)
  return prefix + "downsample." + ("0" if kind == "Conv" else "1")


def _vgg_names(path, module):
  """convI / bnI -> features.N (torch's index in its Sequential of conv, [bn,] relu and pool layers)."""
  index, n, torch_index = 0, 0, {}
  for layer in vgg.COLUMNS[module.column]:
    if layer == "M":
      index += 1
      continue
    n += 1
    torch_index[f"conv{n}"], torch_index[f"bn{n}"] = index, index + 1
    index += 3 if module.batch_norm else 2
  if path[0] in torch_index:
    return f"features.{torch_index[path[0]]}"
  return {"fc1": "classifier.0", "fc2": "classifier.3", "fc3": "classifier.6"}[path[0]]


_ALEXNET = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
            "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}
_GOOGLENET = {"conv2_reduce": "conv2", "conv2": "conv3", "b1": "branch1", "b2_reduce": "branch2.0",
              "b2_3x3": "branch2.1", "b3_reduce": "branch3.0", "b3_5x5": "branch3.1", "b4_proj": "branch4.1",
              "aux_4a": "aux1", "aux_4d": "aux2"}


class _Family(NamedTuple):
  """How one torchvision model maps onto the zoo."""
  zoo: str                  # the zoo's name
  options: Dict[str, Any]   # and options
  names: Callable           # (cnnjax module path, module) -> torch's module name
  head: str                 # torch's classifier, whose weight gives the class count
  flattened: Dict[Tuple[str, ...], Tuple[int, int, int]] = {}  # dense layers after a C x H x W flatten


def _families() -> Dict[str, _Family]:
  fam = {}
  for depth in (18, 34, 50, 101, 152):
    fam[f"resnet{depth}"] = _Family(f"resnet{depth}", {}, _resnet_names, "fc")
  for depth in (11, 13, 16, 19):
    for suffix in ("", "_bn"):
      fam[f"vgg{depth}{suffix}"] = _Family(f"vgg{depth}{suffix}", {}, _vgg_names, "classifier.6",
                                           {("fc1",): (512, 7, 7)})
  fam["alexnet"] = _Family("alexnet_owt", {}, lambda path, _: _ALEXNET[path[0]], "classifier.6",
                           {("fc6",): (256, 6, 6)})
  fam["googlenet"] = _Family("googlenet", {"layout": "torchvision"},
                             lambda path, _: ".".join(_GOOGLENET.get(p, p) for p in path), "fc",
                             {("aux_4a", "fc1"): (128, 4, 4), ("aux_4d", "fc1"): (128, 4, 4)})
  return fam


FAMILIES = _families()
NAMES = tuple(FAMILIES)


def preprocessing(name: str) -> Dict[str, Any]:
  """The input torchvision's ImageNet weights for `name` expect (GoogLeNet's were trained with transform_input)."""
  _family(name)
  return {**IMAGENET, "transform_input": name == "googlenet"}


def normalization(prep: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
  """The per-channel (mean, std) to apply to images in [0, 1] so the zoo model sees what torchvision's did.

  torchvision's GoogLeNet with `transform_input=True` maps ImageNet-normalised x to x * std / 0.5 +
  (mean - 0.5) / 0.5, i.e. it feeds (image - 0.5) / 0.5: that is mean = std = 0.5 here."""
  if prep.get("transform_input"):
    return np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32)
  return np.asarray(prep["mean"], np.float32), np.asarray(prep["std"], np.float32)


def _family(name: str) -> _Family:
  if name not in FAMILIES:
    raise ConfigError(f"torchvision model {name!r} is not supported; supported: {list(NAMES)}")
  return FAMILIES[name]


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor (torch is not imported here)
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def _torch_key(family: _Family, module, collection: str, path: Tuple[str, ...], leaf: str, ndim: int):
  """torch's state_dict key for one cnnjax leaf, and the function that converts torch's array to it."""
  prefix = family.names(path, module)
  if collection == "batch_stats":
    return f"{prefix}.running_{leaf}", lambda w: w
  if leaf in ("scale", "bias"):
    return f"{prefix}.{'weight' if leaf == 'scale' else 'bias'}", lambda w: w
  if ndim == 4:  # conv: OIHW -> HWIO
    return f"{prefix}.weight", lambda w: w.transpose(2, 3, 1, 0)
  if path in family.flattened:  # dense after torch's C,H,W flatten: inputs reordered to H,W,C
    c, h, w_ = family.flattened[path]
    return f"{prefix}.weight", lambda w: w.reshape(-1, c, h, w_).transpose(2, 3, 1, 0).reshape(h * w_ * c, -1)
  return f"{prefix}.weight", lambda w: w.T


def _listed(items, limit=20):
  """The first `limit` items, and how many more (another model's state_dict misses hundreds of keys)."""
  return f"{items[:limit]}" + (f" and {len(items) - limit} more" if len(items) > limit else "")


def from_torchvision(name: str, state_dict: Mapping[str, Any]):
  """(module, variables) for torchvision model `name` with `state_dict` (torch tensors or numpy arrays).

  The class count is read from the classifier's weight; a GoogLeNet state_dict without the auxiliary heads
  (`aux1.*`, `aux2.*`) gives a module without them. Missing or unexpected keys, or arrays of another shape,
  raise ConfigError listing them."""
  family = _family(name)
  arrays = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  head = arrays.get(family.head + ".weight")
  options = dict(family.options)
  if name == "googlenet":
    options["aux_logits"] = any(k.startswith(("aux1.", "aux2.")) for k in arrays)
  module = models.create(family.zoo, num_classes=int(head.shape[0]) if head is not None else 1000, **options)
  shapes = traverse_util.flatten_dict(jax.eval_shape(
      lambda: module.init({"params": jax.random.key(0)}, jnp.zeros((1, 224, 224, 3)), train=False)))
  keys = {path: _torch_key(family, module, path[0], tuple(path[1:-1]), path[-1], len(shape.shape))
          for path, shape in shapes.items()}
  wanted = {key for key, _ in keys.values()}
  missing, unexpected = sorted(wanted - set(arrays)), sorted(set(arrays) - wanted)
  if missing or unexpected:
    raise ConfigError(f"state_dict does not fit torchvision's {name}: {len(missing)} missing key(s) "
                      f"{_listed(missing)}, {len(unexpected)} unexpected key(s) {_listed(unexpected)}")
  flat, wrong = {}, []
  for path, (key, convert) in keys.items():
    array = _to_numpy(arrays[key])
    try:
      flat[path] = convert(array)
    except ValueError:  # a reshape that does not fit: reported with the others below
      flat[path] = array
    if flat[path].shape != shapes[path].shape:
      wrong.append(f"{key} {tuple(array.shape)} (the model's {'/'.join(path)} is {tuple(shapes[path].shape)})")
  if wrong:
    raise ConfigError(f"state_dict does not fit torchvision's {name}: {len(wrong)} array(s) of another shape: "
                      f"{_listed(wrong)}")
  return module, traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


# ----------------------------------------------------------------------------------------------------------------
# Files and checkpoints.

def read_weights(path: str) -> Dict[str, Any]:
  """A state_dict from `.safetensors` (numpy, no torch needed) or `.pth`/`.pt` (torch.load, weights only)."""
  if not os.path.isfile(path):
    raise ConfigError(f"--weights {path!r}: no such file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  if path.endswith((".pth", ".pt")):
    try:
      import torch
    except ImportError as e:
      raise ConfigError(f"--weights {path!r}: reading .pth files needs PyTorch: pip install {TORCH_PIN} "
                        f"(or convert the file to .safetensors)") from e
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping) or not all(hasattr(v, "shape") for v in state_dict.values()):
      raise ConfigError(f"--weights {path!r} does not hold a state_dict (a mapping of names to tensors); "
                        f"save `model.state_dict()`")
    return dict(state_dict)
  raise ConfigError(f"--weights {path!r}: unknown format; expected .safetensors, .pth or .pt")


def convert(name: str, weights: str, out: str, prep: Mapping[str, Any]) -> str:
  """Writes the checkpoint directory `out` (see the module docstring) for torchvision model `name`."""
  if os.path.exists(out) and os.listdir(out):
    raise ConfigError(f"--out {out!r} exists and is not empty; choose a new directory")
  module, variables = from_torchvision(name, read_weights(weights))
  manager = checkpoint.Manager(os.path.join(out, "checkpoints"), max_to_keep=1, async_save=False)
  manager.save(0, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
  manager.wait()
  manager.close()
  options = {k: v for k, v in [("layout", getattr(module, "layout", None)),
                               ("aux_logits", getattr(module, "aux_logits", None))] if v is not None}
  workdir_lib.write_json(workdir_lib.path(out) / JSON_NAME, {
      "model": _family(name).zoo, "options": options, "num_classes": module.num_classes,
      "preprocessing": dict(prep),
      "source": {"torchvision_model": name, "weights": os.path.abspath(weights),
                 "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}})
  return out


def load(directory: str):
  """(model_name, model_options, variables, preprocessing) of a directory written by `convert`;
  `models.create(model_name, num_classes=..., **model_options).apply(variables, x, train=False)`."""
  path = workdir_lib.path(directory) / JSON_NAME
  meta = workdir_lib.read_json(path)
  if meta is None:
    raise ConfigError(f"{directory!r} is not a converted checkpoint: {path} is missing")
  state, _ = checkpoint.load_numpy(directory)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return meta["model"], meta["options"], variables, meta["preprocessing"]


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  flags.DEFINE_string("model", None, f"torchvision's name: {', '.join(NAMES)}", flag_values=fv)
  flags.DEFINE_string("weights", None, ".safetensors, or .pth/.pt (needs torch)", flag_values=fv)
  flags.DEFINE_string("out", None, f"a new checkpoint directory: writes OUT/checkpoints/0/ and OUT/{JSON_NAME}",
                      flag_values=fv)
  flags.DEFINE_integer("resize_size", None, "shorter side before the centre crop (default 256)", flag_values=fv)
  flags.DEFINE_integer("input_size", None, "centre crop the weights expect (default 224)", flag_values=fv)
  flags.DEFINE_bool("transform_input", None, "GoogLeNet's transform_input (default: on, as torchvision's weights "
                    "were trained)", flag_values=fv)
  for name in ("resize_size", "input_size", "transform_input"):  # the spellings of the argparse version
    flags.DEFINE_alias(name.replace("_", "-"), name, flag_values=fv)
  flags.mark_flags_as_required(["model", "weights", "out"], flag_values=fv)
  return fv


def main(argv=None) -> int:
  """The command on `argv` (without the program name), as a function; returns the exit status."""
  return cli.call(define_flags, _run, argv)


def _run(args, rest) -> int:
  if rest:
    print(f"error: unexpected arguments {rest}", file=sys.stderr)
    return 2
  try:
    prep = preprocessing(args.model)
    if args.transform_input and args.model != "googlenet":
      raise ConfigError(f"--transform-input is GoogLeNet's; --model {args.model} has none")
    for key in ("resize_size", "input_size", "transform_input"):
      if getattr(args, key) is not None:
        prep[key] = getattr(args, key)
    if not 0 < prep["input_size"] <= prep["resize_size"]:
      raise ConfigError(f"--input-size {prep['input_size']} and --resize-size {prep['resize_size']}: need "
                        f"0 < input size <= resize size (the crop is taken from the resized image)")
    convert(args.model, args.weights, args.out, prep)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out} ({args.model}; preprocessing in {os.path.join(args.out, JSON_NAME)})")
  return 0


if __name__ == "__main__":
  cli.program(define_flags, _run)

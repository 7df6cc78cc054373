"""The model zoo against the papers' and torchvision's parameter counts, and its switches."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import layers, models
from cnnjax.errors import ConfigError
from cnnjax.train import state as state_lib, steps
from tests import helpers


def n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_vars(name, size, channels=3, num_classes=1000, **opts):
  m = models.create(name, num_classes=num_classes, **opts)
  return jax.eval_shape(lambda: m.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
                                       jnp.zeros((1, size, size, channels)), train=False))


# torchvision's published `num_params` (weights metadata, IMAGENET1K_V1) for the models it ships.
TORCHVISION = {
    "alexnet_owt": (224, 61_100_840, {}), "vgg11": (224, 132_863_336, {}), "vgg11_bn": (224, 132_868_840, {}),
    "vgg13": (224, 133_047_848, {}), "vgg13_bn": (224, 133_053_736, {}), "vgg16": (224, 138_357_544, {}),
    "vgg16_bn": (224, 138_365_992, {}), "vgg19": (224, 143_667_240, {}), "vgg19_bn": (224, 143_678_248, {}),
    "googlenet": (224, 6_624_904, {"layout": "torchvision", "aux_logits": False}),
    "resnet18": (224, 11_689_512, {}), "resnet34": (224, 21_797_672, {}), "resnet50": (224, 25_557_032, {}),
    "resnet101": (224, 44_549_160, {}), "resnet152": (224, 60_192_808, {}),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_parameter_counts_equal_torchvision(name):
  size, want, opts = TORCHVISION[name]
  assert n_params(abstract_vars(name, size, **opts)["params"]) == want


def test_googlenet_with_aux_heads_equals_torchvision_aux_logits_true():
  # torchvision.models.googlenet(aux_logits=True, init_weights=False): 13,004,888 parameters.
  assert n_params(abstract_vars("googlenet", 224, layout="torchvision")["params"]) == 13_004_888


def test_vgg_table2_millions():
  """Simonyan & Zisserman 2015, Table 2: 133, 133, 134, 138, 144 million for A, B, C, D, E (A-LRN = A)."""
  for name, millions in [("vgg_a", 133), ("vgg_a_lrn", 133), ("vgg_b", 133), ("vgg_c", 134), ("vgg_d", 138),
                         ("vgg_e", 144)]:
    assert round(n_params(abstract_vars(name, 224)["params"]) / 1e6) == millions, name


def test_alexnet_paper_count():
  """Two-column AlexNet at 227x227: the commonly derived 60,965,224 ("60 million parameters", Sec. 1), by layer:
  conv1 96*(11*11*3)+96, conv2 256*(5*5*48)+256, conv3 384*(3*3*256)+384, conv4 384*(3*3*192)+384,
  conv5 256*(3*3*192)+256, fc6 9216*4096+4096, fc7 4096*4096+4096, fc8 4096*1000+1000."""
  p = abstract_vars("alexnet", 227)["params"]
  want = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
          "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}
  assert {k: n_params(v) for k, v in p.items()} == want
  assert sum(want.values()) == 60_965_224


def test_lenet5_per_layer_counts_equal_the_paper():
  """LeCun et al. 1998, Sec. II.B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 (60,000 in all)."""
  p = abstract_vars("lenet5", 32, channels=1, num_classes=10)["params"]
  assert {k: n_params(v) for k, v in p.items()} == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120,
                                                    "F6": 10164}
  modern = abstract_vars("lenet5", 32, channels=1, num_classes=10, modern=True)["params"]
  assert n_params(modern["C3"]) == 16 * (6 * 25 + 1) and "S2" not in modern


def test_lenet1_per_layer_counts_hand_computed():
  p = abstract_vars("lenet1", 28, channels=1, num_classes=10)["params"]
  assert {k: n_params(v) for k, v in p.items()} == {"H1": 4 * 26, "H2": 8, "H3": 12 * (2 * 25 + 1), "H4": 24,
                                                    "output": 10 * (12 * 16 + 1)}


def test_cifar_resnet_counts_table6():
  """He et al. 2016 Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M (option A, 10 classes); exact counts
  hand-derived: 6n+2 layers, BN scale+offset per conv, no projection parameters."""
  for name, want in [("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018),
                     ("resnet110", 1_727_962)]:
    assert n_params(abstract_vars(name, 32, num_classes=10)["params"]) == want, name


def test_googlenet_grid_sizes_follow_table1():
  m = models.create("googlenet", num_classes=10)
  _, inter = jax.eval_shape(lambda: m.apply(m.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False),
                                            jnp.zeros((1, 224, 224, 3)), train=False, capture_intermediates=True))
  get = lambda k: inter["intermediates"][k]["__call__"][0].shape
  assert get("inception3a")[1:] == (28, 28, 256) and get("inception3b")[1:] == (28, 28, 480)
  assert get("inception4a")[1:] == (14, 14, 512) and get("inception4e")[1:] == (14, 14, 832)
  assert get("inception5b")[1:] == (7, 7, 1024)


# Tiny inputs the architectures allow, for one real train step each. ResNet-50 keeps its bottleneck blocks with
# projection shortcuts (the path ResNet-101 and -152 share), one per stage: a quarter of the layers to compile.
TINY = {"lenet1": (28, 1, {}), "lenet5": (32, 1, {}), "alexnet": (67, 3, {}), "alexnet_owt": (64, 3, {}),
        "vgg_a_lrn": (32, 3, {}), "vgg_c": (32, 3, {"batch_norm": True}), "googlenet": (96, 3, {}),
        "resnet20": (16, 3, {}), "resnet50": (32, 3, {"width": 0.25, "stage_sizes": (1, 1, 1, 1)})}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_one_train_step_is_sgd_on_the_loss_written_here(name):
  """One train step of each architecture equals plain SGD on a loss written here with optax's integer-label
  cross-entropy: the mean over the batch of the train-mode logits' loss plus 0.3 x each auxiliary head's
  (GoogLeNet), dropout keyed by fold_in(state.rng, 0); the logged total loss is that loss summed over the batch,
  and the running statistics are the ones that forward pass wrote."""
  size, channels, opts = TINY[name]
  m = models.create(name, num_classes=10, **opts)
  lr = 0.01
  tx = optax.sgd(lr)
  v = helpers.random_variables(m, (size, size, channels))  # any generic point; initialisers cost a third
  st = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v.get("batch_stats", {}),
                            opt_state=tx.init(v["params"]), rng=jax.random.PRNGKey(1))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(4, size, size, channels)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 4), jnp.int32)}
  new, metrics = jax.jit(steps.make_train_step(m, tx, optax.constant_schedule(lr)))(st, batch)

  def loss(params):
    out, upd = m.apply({"params": params, "batch_stats": st.batch_stats}, batch["image"], train=True,
                       mutable=["batch_stats"], rngs={"dropout": jax.random.fold_in(st.rng, 0)})
    logits, aux = out if isinstance(out, tuple) else (out, ())
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z, batch["label"]).mean()
    return ce(logits) + sum(0.3 * ce(a) for a in aux), upd.get("batch_stats", {})
  (want_loss, want_stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(st.params)
  np.testing.assert_allclose(metrics["total_loss"], 4 * want_loss, rtol=1e-5)
  eps = float(np.finfo(np.float32).eps)
  for path, got, p, g in zip(*zip(*jax.tree_util.tree_leaves_with_path(new.params)), jax.tree.leaves(st.params),
                             jax.tree.leaves(grads)):
    got, p, step = np.asarray(got, np.float64), np.asarray(p, np.float64), lr * np.asarray(g, np.float64)
    tol = 1e-4 * np.abs(step).max() + 2 * eps * np.abs(p).max()  # the update's tolerance, plus float32 rounding
    assert np.abs(got - (p - step)).max() <= tol, f"params{jax.tree_util.keystr(path)}"
  assert jax.tree.structure(new.batch_stats) == jax.tree.structure(want_stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new.batch_stats, want_stats)


@pytest.mark.slow
def test_googlenet_aux_heads_only_in_training():
  m = models.create("googlenet", num_classes=10)
  v = helpers.random_variables(m, (96, 96, 3))  # not m.init, which runs GoogLeNet op by op
  x = jnp.ones((2, 96, 96, 3))
  out = m.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  assert isinstance(out, tuple) and len(out[1]) == 2 and out[1][0].shape == (2, 10)
  assert m.apply(v, x, train=False).shape == (2, 10)


@pytest.mark.slow
def test_batch_norm_statistics_change_in_training_only():
  """One train-mode call moves each running average to momentum * old + (1 - momentum) * the batch statistic
  (biased variance), computed here in numpy float64 from the captured input of the stem's norm; eval mode leaves
  them bit-identical."""
  m = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1))
  v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3)) * 3 + 1
  _, upd = m.apply(v, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True)
  h = np.asarray(upd["intermediates"]["stem_conv"]["__call__"][0], np.float64).reshape(-1, 16)
  old = v["batch_stats"]["stem_norm"]
  np.testing.assert_array_equal(old["mean"], np.zeros(16))
  np.testing.assert_array_equal(old["var"], np.ones(16))
  new = upd["batch_stats"]["stem_norm"]
  np.testing.assert_allclose(new["mean"], 0.9 * 0.0 + 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["var"], 0.9 * 1.0 + 0.1 * h.var(0), rtol=1e-5, atol=1e-6)
  assert len(jax.tree.leaves(upd["batch_stats"])) == len(jax.tree.leaves(v["batch_stats"])) == 2 * 7
  for a, b in zip(jax.tree.leaves(v["batch_stats"]), jax.tree.leaves(upd["batch_stats"])):
    assert not np.allclose(a, b)                                 # every norm layer moved
  _, same = m.apply(v, x, train=False, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, v["batch_stats"], same["batch_stats"])


def test_residual_false_and_norm_none_remove_skips_and_norms():
  flat = lambda t: {"/".join(str(getattr(k, "key", k)) for k in path)
                    for path, _ in jax.tree_util.tree_leaves_with_path(t)}
  res = flat(abstract_vars("resnet18", 64)["params"])
  plain = flat(abstract_vars("resnet18", 64, residual=False)["params"])
  assert any("stage2_block1/Conv_2" in k for k in res)          # the projection shortcut (option B)
  assert not any("Conv_2" in k for k in plain)                   # plain: no shortcut convolutions at all
  nonorm = abstract_vars("resnet18", 64, norm="none")
  assert "batch_stats" not in nonorm or not jax.tree.leaves(nonorm["batch_stats"])
  names = flat(nonorm["params"])
  assert not any("BatchNorm" in k or "norm" in k.split("/")[-2].lower() for k in names)
  assert any(k.endswith("Conv_0/bias") for k in names)            # conv bias appears without a norm
  assert not any(k.endswith("Conv_0/bias") for k in res)
  # A plain net has exactly the residual net's parameters minus the projections.
  diff = (n_params(abstract_vars("resnet18", 64)["params"]) -
          n_params(abstract_vars("resnet18", 64, residual=False)["params"]))
  assert diff == sum((c_in * c_out + 2 * c_out) for c_in, c_out in [(64, 128), (128, 256), (256, 512)])


@pytest.mark.slow
def test_every_conv_impl_gives_the_same_logits():
  """Each hand-written implementation against lax's logits on one ResNet. The reference is conv_impl='xla': at
  8x8 every Conv there is lax.conv_general_dilated (no CPU polyphase path: the stride-2 outputs are 4x4).
  'winograd' runs the five stride-1 3x3 convolutions and hands the two stride-2 ones to lax."""
  opts = dict(num_classes=10, stage_sizes=(1, 1, 1), width=0.5)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
  m_ref = models.create("resnet20", **opts)
  v = m_ref.init(jax.random.PRNGKey(0), x, train=False)
  with layers.record_conv_impls() as ref_plan:
    ref = m_ref.apply(v, x, train=False)
  assert [r.used for r in ref_plan] == ["xla"] * 7
  for impl in [i for i in layers.IMPLS if i != "xla"]:
    with layers.record_conv_impls() as plan:
      got = models.create("resnet20", conv_impl=impl, **opts).apply(v, x, train=False)
    want = [impl] * 7                  # stem, then (Conv_0, Conv_1) per stage
    if impl == "winograd":
      want[3] = want[5] = "xla"        # stage2's and stage3's first convolutions have stride 2
    if impl == "auto":                 # on CPU, with the tests' empty autotune cache: plain lax
      want = ["xla"] * 7
    assert [r.used for r in plan] == want, impl
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=impl)


def test_unknown_name_or_option_lists_valid_ones():
  with pytest.raises(ConfigError, match=r"unknown model 'vgg17'.*vgg16"):
    models.create("vgg17", num_classes=10)
  with pytest.raises(ConfigError, match=r"no option\(s\) \['batchnorm'\].*did you mean 'batch_norm'"):
    models.create("vgg16", num_classes=10, batchnorm=True)
  assert {"lenet1", "lenet5", "alexnet", "alexnet_owt", "vgg_a", "vgg_a_lrn", "vgg_b", "vgg_c", "vgg_d", "vgg_e",
          "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "googlenet", "resnet18", "resnet152", "resnet20",
          "resnet110"} <= set(models.names())

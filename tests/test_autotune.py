"""conv_impl='auto' decides per machine (cnnjax/layers/autotune.py): decisions under a fake clock, the machine
key, the cache file (damaged, foreign, cached-only, a second run), process 0's plan for every process, and models
that really run each CPU path the tuner can choose, forced through the cache, against plain lax; two real
processes agreeing on process 0's plan."""
import collections
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers, models
from cnnjax.errors import ConfigError
from cnnjax.layers import autotune
from cnnjax.layers._conv_spec import make_spec
from tests.helpers import tiny_config

KEY = {"cpu": "Test CPU", "isa": ["avx2", "fma"], "jax": "0", "jaxlib": "0", "xla_flags": ""}
DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def _restore_autotune(monkeypatch):
  monkeypatch.setattr(autotune, "_STATE", autotune.state())   # each test's configure() is undone after it


def _spec(shape=(2, 16, 16, 8), k=3, stride=2, cout=8, padding="SAME"):
  return make_spec(jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((k, k, shape[-1], cout),
                   jnp.float32), (stride, stride), padding, dimension_numbers=DN)


class FakeClock:
  """A timer that only moves when a candidate 'runs': each call of path p advances it by the next of cost[p]; a
  path not listed costs 5 (slower than any listed lax: it never wins)."""

  def __init__(self, cost):
    self.cost = collections.defaultdict(lambda: [5.0], {p: list(c) for p, c in cost.items()})
    self.t, self.calls = 0.0, []

  def __call__(self):
    return self.t

  def make_fn(self, path, spec):
    def run(*args):
      self.calls.append(path)
      c = self.cost[path]
      if c == ["fails"]:
        raise RuntimeError(f"{path} does not compile")
      self.t += c[0]
      c.append(c.pop(0))   # cycle through the listed costs
    return run


def _decide(tmp_path, cost, spec=None, mode="measure"):
  autotune.configure(mode, str(tmp_path), key=KEY)
  spec = spec or _spec()
  clock = FakeClock(cost)
  autotune.decide({autotune.spec_key(spec): spec}, timer=clock, make_fn=clock.make_fn)
  return autotune.resolve_auto(spec, "cpu")[0], clock


def test_a_slow_candidate_is_never_chosen_and_a_clear_winner_is(tmp_path):
  """The candidates of a strided 3x3 layer with a 8x8 output are plain lax, lax_cpu, polyphase and im2col."""
  assert autotune.candidates(_spec()) == ("xla", "lax_cpu", "polyphase", "im2col")
  # lax_cpu is 3x slower, polyphase 2x slower, im2col 1.5x, and lax itself noisy (one round in five very slow): lax.
  noisy = [1.0, 1.0, 1.0, 1.0, 9.0]
  path, clock = _decide(tmp_path / "a", {"xla": noisy, "lax_cpu": [3.0], "polyphase": [2.0], "im2col": [1.5]})
  assert path == "xla" and set(clock.calls) == {"xla", "lax_cpu", "polyphase", "im2col"}
  # polyphase at 0.6 of lax wins, whatever the others do.
  assert _decide(tmp_path / "b", {"xla": noisy, "lax_cpu": [3.0], "polyphase": [0.6]})[0] == "polyphase"


def test_a_tie_within_the_margin_goes_to_lax(tmp_path):
  just_inside = 1 - autotune.MARGIN + 0.01
  assert _decide(tmp_path / "a", {"xla": [1.0], "lax_cpu": [just_inside], "polyphase": [1.0]})[0] == "xla"
  just_outside = 1 - autotune.MARGIN - 0.01
  assert _decide(tmp_path / "b", {"xla": [1.0], "lax_cpu": [just_outside], "polyphase": [1.0]})[0] == "lax_cpu"


def test_a_candidate_that_fails_is_dropped_with_a_warning(tmp_path, caplog):
  with caplog.at_level(logging.WARNING, logger="cnnjax"):
    path, _ = _decide(tmp_path, {"xla": [1.0], "lax_cpu": [0.5], "polyphase": ["fails"]})
  assert path == "lax_cpu"
  assert any("polyphase failed" in r.getMessage() and "does not compile" in r.getMessage() for r in caplog.records)


def test_the_ratio_is_paired_within_rounds():
  """A round slowed by load (x3) slows both sides of its ratio: polyphase at 0.7 of lax in four rounds of five
  wins, although a load that hit three of its rounds and two of lax's puts its median time (2.1) above lax's
  (1.0); medians compared unpaired would keep lax."""
  times = {"xla": [1.0, 1.0, 3.0, 3.0, 1.0], "polyphase": [0.7, 0.7, 2.1, 2.1, 2.1]}
  assert autotune.choose(times) == "polyphase"
  assert autotune.ratios(times)["polyphase"] == pytest.approx(0.7)


def test_the_machine_key_changes_with_cpu_model_isa_and_flags(tmp_path):
  intel = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx2 fma avx512f amx_tile hypervisor\n"
  amd = "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma hypervisor\n"
  k = autotune.machine_key(intel, xla_flags="")
  assert k["cpu"] == "Intel(R) Xeon(R) Processor" and k["isa"] == ["amx_tile", "avx2", "avx512f", "fma", "sse2"]
  files = {autotune.cache_file(str(tmp_path), autotune.machine_key(text, xla_flags=flags))
           for text in (intel, amd, intel.replace(" avx512f", "")) for flags in ("", "--xla_cpu_foo=1")}
  assert len(files) == 6 and all(f.parent == tmp_path for f in files)
  # A flag that is no instruction set (hypervisor) leaves the key as it is; so does a second processor's block.
  assert autotune.machine_key(intel.replace(" hypervisor", ""), xla_flags="") == k
  assert autotune.machine_key(intel + "\n" + amd, xla_flags="") == k
  assert autotune.machine_key("", xla_flags="")["isa"] == []                 # no /proc/cpuinfo: no flags
  assert str(autotune.cache_file("", k)).startswith(str(autotune.pathlib.Path("~/.cache/cnnjax").expanduser()))


def test_a_second_run_and_cached_only_mode_measure_nothing(tmp_path):
  spec = _spec()
  path, _ = _decide(tmp_path, {"xla": [1.0], "lax_cpu": [3.0], "polyphase": [0.5]})
  assert path == "polyphase"
  doc = json.loads(autotune.cache_file(str(tmp_path), KEY).read_text())
  assert doc["machine"] == KEY and doc["decisions"][autotune.spec_key(spec)]["path"] == "polyphase"
  for mode in ("measure", "cached"):     # a restarted run: the cache decides, the clock never runs a candidate
    path, clock = _decide(tmp_path, {"xla": [1.0], "lax_cpu": [0.1], "polyphase": [9.0]}, mode=mode)
    assert path == "polyphase" and clock.calls == [], mode
    assert autotune.state().summary["from_cache"] == 1 and autotune.state().summary["measured"] == 0
    assert autotune.resolve_auto(spec, "cpu")[1].startswith("autotune (cache): polyphase 500.0, xla 1000.0")
  # cached-only on a shape it has not seen: plain lax, nothing timed.
  other = _spec((2, 8, 8, 8), stride=1)
  path, clock = _decide(tmp_path, {"xla": [1.0], "lax_cpu": [0.1]}, spec=other, mode="cached")
  assert (path, clock.calls) == ("xla", [])
  assert autotune.resolve_auto(other, "cpu")[1] == "not decided (conv_autotune=cached): lax"
  path, clock = _decide(tmp_path, {"xla": [1.0], "lax_cpu": [0.1]}, spec=other, mode="off")
  assert (path, clock.calls) == ("xla", [])


_OLD = json.dumps({"version": 1, "machine": KEY,
                   "decisions": {autotune.spec_key(_spec()): {"path": "lax_cpu", "ms": {}}}})


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": autotune.VERSION, "decisions": []}),
                                     "damaged", _OLD], ids=["not json", "decisions not a dict", "damaged",
                                                            "version 1 (before im2col and the network check)"])
def test_a_damaged_cache_file_is_ignored_with_a_warning(tmp_path, caplog, content):
  f = autotune.cache_file(str(tmp_path), KEY)
  f.write_text(content)
  with caplog.at_level(logging.WARNING, logger="cnnjax"):
    path, clock = _decide(tmp_path, {"xla": [1.0], "lax_cpu": [3.0], "polyphase": [0.5]})
  assert path == "polyphase" and clock.calls                       # measured again, and written anew
  assert any("ignoring" in r.getMessage() and str(f) in r.getMessage() for r in caplog.records)
  assert json.loads(f.read_text())["machine"] == KEY


def test_a_foreign_cache_file_is_never_trusted(tmp_path, caplog):
  """A file at this machine's name holding another machine's key (copied from elsewhere, or a hash collision)
  with a decision for this very layer: ignored with a warning, in cached-only mode too."""
  spec = _spec()
  f = autotune.cache_file(str(tmp_path), KEY)
  f.write_text(json.dumps({"version": autotune.VERSION, "machine": dict(KEY, cpu="Other CPU"),
                           "decisions": {autotune.spec_key(spec): {"path": "polyphase", "ms": {}}}}))
  with caplog.at_level(logging.WARNING, logger="cnnjax"):
    assert _decide(tmp_path, {"xla": [1.0]}, mode="cached")[0] == "xla"
  assert any("another machine" in r.getMessage() and "Other CPU" in r.getMessage() for r in caplog.records)
  # A decision naming a path that does not fit the layer (Winograd for a strided one) is not run either.
  f.write_text(json.dumps({"version": autotune.VERSION, "machine": KEY,
                           "decisions": {autotune.spec_key(spec): {"path": "winograd_f4", "ms": {}}}}))
  assert _decide(tmp_path, {"xla": [1.0]}, mode="cached")[0] == "xla"


def test_process_0_decides_for_every_process(tmp_path, monkeypatch):
  """On process 1 of 2 nothing is measured and process 0's plan (the broadcast) replaces the local one, even
  where process 1's own cache says otherwise."""
  a, b = _spec(), _spec((2, 8, 8, 8), stride=1)
  autotune.write(autotune.cache_file(str(tmp_path), KEY), KEY,
                 {autotune.spec_key(a): {"path": "lax_cpu", "ms": {}}})
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  sent = []

  def broadcast(x):
    sent.append(x)
    return np.array([autotune.CHOICES.index("polyphase"), autotune.CHOICES.index("xla")], np.int32)
  autotune.configure("measure", str(tmp_path), key=KEY)
  clock = FakeClock({})
  specs = {autotune.spec_key(a): a, autotune.spec_key(b): b}
  assert autotune.decide(specs, timer=clock, make_fn=clock.make_fn, broadcast=broadcast)
  assert clock.calls == [] and list(sent[0]) == [autotune.CHOICES.index("lax_cpu"), 0]
  assert [autotune.resolve_auto(s, "cpu")[0] for s in (a, b)] == ["polyphase", "xla"]


def _check_network(tmp_path, plan_cost, lax_cost=(1.0,), mode="measure", path="polyphase"):
  """check_network on a one-layer network whose layer is decided `path`, under a fake clock: the network's
  forward+backward costs `plan_cost` per call when compiled under the plan, `lax_cost` under lax_only."""
  spec = _spec()
  autotune.write(autotune.cache_file(str(tmp_path), KEY), KEY, {autotune.spec_key(spec): {"path": path, "ms": {}}})
  autotune.configure(mode, str(tmp_path), key=KEY)
  clock = FakeClock({"xla": list(lax_cost), "plan": list(plan_cost)})
  built = []

  def network():
    built.append(True)
    return (lambda: clock.make_fn("xla" if autotune._LAX_ONLY else "plan", spec)), ()
  keep = autotune.check_network({autotune.spec_key(spec): spec}, network, timer=clock)
  return keep, autotune.resolve_auto(spec, "cpu")[0], built, clock


def test_a_plan_that_loses_over_the_whole_network_is_dropped_and_remembered(tmp_path):
  """The layer's path won alone, but the network under the plan is slower than under lax: every convolution
  runs lax, and a second run reads that verdict instead of measuring (its network is never built)."""
  keep, path, built, clock = _check_network(tmp_path, plan_cost=[1.3])
  assert (keep, path, built) == (False, "xla", [True])
  assert clock.calls.count("plan") == clock.calls.count("xla") == 1 + autotune.ROUNDS   # calibration, rounds
  assert autotune.state().summary["network"] == {"keep": False, "ratio": 1.3, "source": "measured",
                                                 "plan": autotune.plan_key({autotune.spec_key(_spec()): _spec()})}
  keep, path, built, clock = _check_network(tmp_path, plan_cost=[0.1])   # the cache's verdict, not this clock
  assert (keep, path, built, clock.calls) == (False, "xla", [], [])
  assert autotune.state().summary["network"]["source"] == "cache"


def test_a_plan_that_wins_over_the_whole_network_is_kept_and_a_near_tie_goes_to_lax(tmp_path):
  keep, path, _, _ = _check_network(tmp_path / "a", plan_cost=[0.9])
  assert (keep, path) == (True, "polyphase")
  just_inside = 1 - autotune.NETWORK_MARGIN + 0.01
  keep, path, _, _ = _check_network(tmp_path / "b", plan_cost=[just_inside])
  assert (keep, path) == (False, "xla")


def test_a_plain_lax_plan_or_cached_only_mode_builds_no_network(tmp_path):
  keep, path, built, _ = _check_network(tmp_path / "a", plan_cost=[9.0], path="xla")
  assert (keep, path, built) == (True, "xla", [])
  keep, path, built, _ = _check_network(tmp_path / "b", plan_cost=[9.0], mode="cached")   # no verdict cached
  assert (keep, path, built) == (True, "polyphase", [])
  assert autotune.state().summary["network"]["source"] == "unchecked"


def test_a_damaged_network_verdict_is_ignored(tmp_path):
  _check_network(tmp_path, plan_cost=[1.3])
  f = autotune.cache_file(str(tmp_path), KEY)
  doc = json.loads(f.read_text())
  doc["networks"] = {k: {"keep": "no"} for k in doc["networks"]}   # not a bool: measured again
  f.write_text(json.dumps(doc))
  autotune.configure("measure", str(tmp_path), key=KEY)
  assert autotune.state().loaded() and autotune.state().networks == {}
  keep, path, built, _ = _check_network(tmp_path, plan_cost=[0.5])
  assert (keep, path, built) == (True, "polyphase", [True])


@pytest.mark.slow
def test_the_network_check_compiles_each_plan_for_real(tmp_path):
  """build.network_grad's function compiled under the plan and under lax_only: different programs (a 1x1 layer
  forced to 'dot' has no convolution under the plan), equal gradients (within float32 rounding)."""
  from cnnjax import build, data as data_lib
  model = models.create("resnet20", num_classes=10, conv_impl="auto", stage_sizes=(1, 1, 1), shortcut="B")
  info = data_lib.DatasetInfo("t", 10, (8, 8, 3), (0.0,) * 3, (1.0,) * 3, ("train",))
  autotune.configure("cached", str(tmp_path), key=KEY)
  with autotune.collecting() as specs:
    build.trace(model, (8, 8, 3), info, 2)
  plan = {k: {"path": "dot" if s.kernel_shape[0] == 1 else "xla", "ms": {}} for k, s in specs.items()}
  autotune.write(autotune.cache_file(str(tmp_path), KEY), KEY, plan)
  autotune.configure("cached", str(tmp_path), key=KEY)
  make_fn, args = build.network_grad(model, (8, 8, 3), info, 2)
  with autotune.lax_only():
    lax_fn = make_fn()
  plan_fn = make_fn()
  count = lambda f: f.as_text().count(" convolution(")
  ones = sum(p["path"] == "dot" for p in plan.values())
  assert ones == 2 and count(plan_fn) < count(lax_fn)
  for g, r in zip(jax.tree.leaves(plan_fn(*args)), jax.tree.leaves(lax_fn(*args))):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


def test_conv_autotune_is_validated():
  from cnnjax import config as config_lib
  c = tiny_config(**{"model.conv_autotune": "sometimes"})
  with pytest.raises(ConfigError, match=r"config.model.conv_autotune='sometimes' is invalid: one of "
                                        r"\('measure', 'cached', 'off'\)"):
    config_lib.validate(c)
  assert "conv_autotune" not in config_lib.model_options(c)     # a setting of the run, not of the model


# The tiny ResNet (8x8, batch 2, projection shortcuts) and the path forced for each of its convolutions: every
# path the tuner can choose, each on a layer it fits (forced: the cache is not bound by the speed filters).
FORCED = {(3, 16, 1, 3): "xla", (16, 16, 1, 3): "winograd_f4", (16, 32, 2, 3): "polyphase",
          (16, 32, 2, 1): "dot", (32, 32, 1, 3): "lax_cpu", (32, 64, 2, 3): "im2col", (32, 64, 2, 1): "polyphase",
          (64, 64, 1, 3): "winograd_f2"}


def _force_plan(tmp_path, model, x):
  """Writes a cache file deciding each of `model`'s convolutions on `x` as FORCED says; returns the paths in
  the model's order."""
  autotune.configure("cached", str(tmp_path), key=KEY)
  with autotune.collecting() as specs:
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  decisions = {}
  for k, s in specs.items():
    decisions[k] = {"path": FORCED[(s.in_shape[-1], s.out_shape[-1], s.strides[0], s.kernel_shape[0])], "ms": {}}
  autotune.write(autotune.cache_file(str(tmp_path), KEY), KEY, decisions)
  autotune.configure("cached", str(tmp_path), key=KEY)


@pytest.mark.slow
def test_each_path_runs_in_a_model_through_auto_and_matches_lax(tmp_path):
  """conv_impl='auto' with a plan forced through the cache: the recorded plan shows every path ran, and the
  logits and the gradients of the loss w.r.t. parameters and input equal plain lax's (conv_impl='xla')."""
  opts = dict(num_classes=10, stage_sizes=(1, 1, 1), shortcut="B")
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
  ref_model, auto_model = (models.create("resnet20", conv_impl=i, **opts) for i in ("xla", "auto"))
  v = ref_model.init(jax.random.PRNGKey(0), x, train=False)
  _force_plan(tmp_path, auto_model, x)

  def loss_and_grads(model):
    f = lambda p, x: jnp.sum(model.apply({**v, "params": p}, x, train=False) ** 2)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(v["params"], x)
  with layers.record_conv_impls() as plan:
    got = loss_and_grads(auto_model)
  used = [r.used for r in plan]
  assert set(used) == set(autotune.CHOICES) and len(used) == 9, used
  assert all(r.reason.startswith("autotune (cache)") for r in plan)
  ref = loss_and_grads(ref_model)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-5 * float(jnp.abs(r).max()))


def _tiny_run_with_a_cached_plan(tmp_path, mode):
  """A 2-step tiny config (conv_autotune=`mode`) and its machine's cache file deciding every convolution of its
  training batch: polyphase for the strided ones, lax_cpu for the rest. Returns (config, machine key, paths)."""
  from cnnjax import config as config_lib
  c = tiny_config(num_train_steps=2, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2,
                  compilation_cache_dir=str(tmp_path / "cache"), **{"model.shortcut": "B", "model.conv_autotune": mode})
  model = models.create(c.model.name, num_classes=10, **config_lib.model_options(c))
  key = autotune.machine_key()
  autotune.configure("cached", c.compilation_cache_dir, key=key)
  with autotune.collecting() as specs:
    models.init_variables(model, (8, 8, 1), dtype="float32", abstract=True, batch=c.batch_size)
  paths = {k: ("polyphase" if s.strides[0] == 2 else "lax_cpu") for k, s in specs.items()}
  autotune.write(autotune.cache_file(c.compilation_cache_dir, key), key,
                 {k: {"path": p, "ms": {}} for k, p in paths.items()})
  return c, key, paths


@pytest.mark.slow
def test_the_run_records_machine_key_and_a_cached_plan(tmp_path):
  """Through the training loop (conv_autotune='cached'): conv_impls.json holds the machine key, says the plan came
  from the cache, and each layer ran the cached path (the paths' values: the test above)."""
  from cnnjax.train import loop
  from cnnjax.workdir import read_jsonl
  c, key, paths = _tiny_run_with_a_cached_plan(tmp_path, "cached")
  loop.run(c, str(tmp_path / "auto"))
  rec = json.loads((tmp_path / "auto" / "conv_impls.json").read_text())
  assert rec["machine"] == key and rec["autotune"]["plan_from_cache"] and rec["autotune"]["mode"] == "cached"
  assert rec["autotune"]["from_cache"] == len(paths) and rec["autotune"]["measured"] == 0
  assert {r["used"] for r in rec["layers"]} == {"polyphase", "lax_cpu"}
  assert np.isfinite([e["loss"] for e in read_jsonl(str(tmp_path / "auto" / "metrics.jsonl"))]).all()


@pytest.mark.slow
def test_a_run_checks_its_plan_on_its_own_train_step(tmp_path, monkeypatch):
  """Through the training loop in 'measure' mode with every layer decided in the cache (nothing to measure per
  layer): the whole-network check times the run's train step (the gradient proxy is made to fail), records a
  measured verdict in conv_impls.json and the cache, and the layers run the plan or, if rejected, plain lax."""
  from cnnjax import build
  from cnnjax.train import loop
  c, key, _ = _tiny_run_with_a_cached_plan(tmp_path, "measure")

  def no_proxy(*a, **kw):
    raise AssertionError("a single-process run times its own train step, not the gradient proxy")
  monkeypatch.setattr(build, "network_grad", no_proxy)
  loop.run(c, str(tmp_path / "auto"))
  rec = json.loads((tmp_path / "auto" / "conv_impls.json").read_text())
  net = rec["autotune"]["network"]
  assert rec["autotune"]["mode"] == "measure" and rec["autotune"]["measured"] == 0
  assert net["source"] == "measured" and isinstance(net["ratio"], float)
  assert {r["used"] for r in rec["layers"]} == ({"polyphase", "lax_cpu"} if net["keep"] else {"xla"})
  cached = json.loads(autotune.cache_file(c.compilation_cache_dir, key).read_text())["networks"]
  assert cached == {net["plan"]: {"keep": net["keep"], "ratio": net["ratio"]}}


_TWO_PROCESSES = r"""
import json, sys
import jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import jax.numpy as jnp
from cnnjax.layers import autotune
from cnnjax.layers._conv_spec import make_spec
key = {"cpu": "Test CPU", "isa": [], "jax": "0", "jaxlib": "0", "xla_flags": ""}
spec = make_spec(jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32), jax.ShapeDtypeStruct((3, 3, 8, 8), jnp.float32),
                 (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
specs = {autotune.spec_key(spec): spec}
f = autotune.cache_file(sys.argv[3], key)
autotune.configure("cached", sys.argv[3], key=key)
if jax.process_index() == 0:   # process 0: polyphase, and a verdict that the network is faster under lax
  autotune.write(f, key, {autotune.spec_key(spec): {"path": "polyphase", "ms": {}}})
  autotune.write(f, key, {}, {autotune.plan_key(specs): {"keep": False, "ratio": 1.3}})
  autotune.configure("cached", sys.argv[3], key=key)
autotune.decide(specs)
first = autotune.resolve_auto(spec, "cpu")[0]
def network():
  raise AssertionError("nothing is measured in cached mode")
autotune.check_network(specs, network)
print(json.dumps([first, autotune.state().summary["from_process_0"], autotune.resolve_auto(spec, "cpu")[0],
                  autotune.state().summary["network"]["source"]]))
"""


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_real_processes_run_process_0s_plan(tmp_path):
  """jax.distributed on 127.0.0.1: process 0's cache says polyphase, process 1's (another directory) is empty;
  after the broadcast both run polyphase. Process 0's cache also says the network is faster under lax; process 1
  has no verdict (it would keep the plan): after check_network's broadcast both run lax."""
  import subprocess
  import sys
  from tests import helpers
  address = f"127.0.0.1:{helpers.free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESSES, address, str(i), str(tmp_path / str(i))],
                            cwd=helpers.ROOT, env=helpers.env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
  assert [json.loads(o.strip().splitlines()[-1]) for o, _ in outs] == [["polyphase", 0, "xla", "cache"],
                                                                      ["polyphase", 1, "xla", "process 0"]]

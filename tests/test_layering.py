"""The package's shape, read from its source: imports point down the layers below, never in a cycle, never
from inside a function (the package's own modules), and never up into configs/ or experiments/."""
import ast
import os

from tests import helpers

# Layers, bottom first: a module may import its own layer and those below (no cycle), never one above.
LAYERS = [
    ("base", ("cnnjax.errors", "cnnjax.param_paths", "cnnjax.cli", "cnnjax.workdir", "cnnjax.metrics",
              "cnnjax.parallel")),
    ("layers", ("cnnjax.layers",)),
    ("models and data", ("cnnjax.models", "cnnjax.data")),
    ("checkpoints and pretrained weights", ("cnnjax.checkpoint", "cnnjax.pretrained")),
    ("train", ("cnnjax.train",)),
    ("run", ("cnnjax.defaults", "cnnjax.config", "cnnjax.build", "cnnjax.train.loop", "cnnjax.run")),
    ("analysis", ("cnnjax.viz", "cnnjax.fewshot", "cnnjax.summary", "cnnjax.analysis")),
]


def modules(root):
  """{dotted name: file} of every module under root/cnnjax."""
  out = {}
  for d, _, files in os.walk(os.path.join(root, "cnnjax")):
    for f in files:
      if f.endswith(".py"):
        name = os.path.relpath(os.path.join(d, f), root)[:-3].replace(os.sep, ".")
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = os.path.join(d, f)
  return out


def imports(path):
  """[(imported name, line, at module level)] of a file (`from a import b` gives a and a.b)."""
  tree = ast.parse(open(path).read())
  top = {id(n) for n in tree.body}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    out += [(n, node.lineno, id(node) in top) for n in names]
  return out


def layer_of(module):
  """The index of the layer whose prefix matches `module` longest (cnnjax.train.loop is 'run', not 'train')."""
  best = max(((len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
              if module == p or module.startswith(p + ".")), default=None)
  return None if best is None else best[1]


def graph(root):
  """({module: set of cnnjax modules it imports}, [problems])."""
  mods = modules(root)
  resolve = lambda n: n if n in mods else (resolve(n.rsplit(".", 1)[0]) if "." in n else None)
  edges, problems = {}, []
  for m, path in mods.items():
    edges[m] = set()
    for name, line, at_top in imports(path):
      where = f"{os.path.relpath(path, root)}:{line}"
      if name.split(".")[0] in ("configs", "experiments"):
        problems.append(f"{where}: the library imports {name} (configs/ and experiments/ sit above it)")
      target = resolve(name) if name.startswith("cnnjax") else None
      if target is None or target == m or m.startswith(target + ".") or target == "cnnjax":
        continue  # not ours, itself, or a package above it (its __init__)
      if not at_top:
        problems.append(f"{where}: imports {name} inside a function (imports of cnnjax go at the top)")
      edges[m].add(target)
  return edges, problems


def cycles(edges):
  """The strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))
  for v in list(edges):
    if v not in index:
      visit(v)
  return out


def problems(root):
  edges, found = graph(root)
  found += [f"import cycle: {' <-> '.join(c)}" for c in cycles(edges)]
  for m, targets in sorted(edges.items()):
    if m == "cnnjax" or m.count(".") == 1 and m.split(".")[1] in ("layers", "models", "data", "train"):
      continue  # package __init__ files gather their children
    if layer_of(m) is None:
      found.append(f"{m} is in no layer: add it to tests/test_layering.py's LAYERS")
      continue
    for t in sorted(targets):
      if layer_of(t) is not None and layer_of(t) > layer_of(m):
        found.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]}), a layer above it")
  return found


def test_imports_point_down_without_cycles():
  assert problems(helpers.ROOT) == []


def test_the_check_finds_a_cycle_an_upward_import_and_a_function_level_import(tmp_path):
  """The checker itself, on a planted package: each kind of problem is reported."""
  pkg = tmp_path / "cnnjax"
  (pkg / "layers").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "errors.py").write_text("from cnnjax import metrics\n")
  (pkg / "metrics.py").write_text("from cnnjax import errors\n")                     # a cycle
  (pkg / "layers" / "__init__.py").write_text("")
  (pkg / "layers" / "conv.py").write_text("from cnnjax.train import loop\nimport configs.default\n"
                                          "def f():\n  from cnnjax import errors\n")
  (pkg / "train").mkdir()
  (pkg / "train" / "__init__.py").write_text("")
  (pkg / "train" / "loop.py").write_text("")
  (pkg / "stray.py").write_text("")
  found = "\n".join(problems(str(tmp_path)))
  assert "import cycle: cnnjax.errors <-> cnnjax.metrics" in found
  assert "cnnjax.layers.conv (layers) imports cnnjax.train.loop (run), a layer above it" in found
  assert "imports configs.default (configs/ and experiments/ sit above it)" in found
  assert "cnnjax/layers/conv.py:4: imports cnnjax.errors inside a function" in found
  assert "cnnjax.stray is in no layer" in found

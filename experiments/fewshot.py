"""Few-shot classification of novel classes on the features of a network trained on base classes.

  python -m experiments.fewshot --workdir W [--layers stem_conv,stage3_block3] [--shots 1,5,10] [--episodes 300]
                                [--novel_classes 5,6,7,8,9] [--queries 15] [--seed 0] [--out DIR]

W is a training workdir whose config.dataset.classes lists the base classes (train with e.g.
`--config.dataset.classes=(0,1,2,3,4)`); the novel classes (default: all the others) must be disjoint from them.
The novel pool is every example of the novel classes in the data set's training and evaluation splits,
preprocessed as evaluation does. Features: each layer's output, globally average-pooled (cnnjax.fewshot.embed),
then centred on the mean feature of the base training set and L2-normalised (SimpleShot's CL2N, Wang et al.
2019), for every method. An episode draws `shots` support and `queries` query examples of each novel class
(N-way = number of novel classes); all methods and layers see the same episodes.

Methods: 1-NN; k-NN with k = min(5, shots) (majority, ties to the smaller label: scikit-learn); nearest centroid;
a logistic-regression probe (scikit-learn, C=1); FRiS-Stolp (cnnjax.fewshot.FrisClassifier, lam 0.5, theta 0),
with its mean number of stolps per class, and its accuracy and coverage when it abstains below FRiS 0.2.
Accuracy: mean over episodes with a 95% interval (1.96 standard errors). Compactness (mean FRiS of each object
to its nearest own-class neighbour against its nearest rival) of the whole novel pool and of the base
evaluation set, per layer. Writes DIR/results.md and DIR/fewshot.png and prints the table.
"""
import os

import numpy as np
from absl import flags

from cnnjax import build, cli, fewshot, viz

METHODS = ("1-NN", "k-NN", "nearest centroid", "logistic probe", "FRiS-Stolp")
ABSTAIN_AT = 0.2


def cl2n(x, mean):
  x = x - mean
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def episode_indices(labels, classes, shots, queries, rng):
  """(support, query) indices into the pool: `shots` + `queries` distinct examples of each class."""
  sup, qry = [], []
  for c in classes:
    idx = rng.permutation(np.flatnonzero(labels == c))[:shots + queries]
    if len(idx) < shots + queries:
      raise SystemExit(f"error: class {c} has {np.sum(labels == c)} examples, fewer than shots + queries = "
                       f"{shots + queries}")
    sup.append(idx[:shots])
    qry.append(idx[shots:])
  return np.concatenate(sup), np.concatenate(qry)


def run_episode(xs, ys, xq, yq, shots):
  """{method: accuracy} plus FRiS-Stolp's stolps per class and its abstaining accuracy and coverage."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.neighbors import KNeighborsClassifier
  d = fewshot.pairwise_distances(xq, xs)
  out = {"1-NN": np.mean(ys[d.argmin(1)] == yq)}
  knn = KNeighborsClassifier(n_neighbors=min(5, shots)).fit(xs, ys)
  out["k-NN"] = np.mean(knn.predict(xq) == yq)
  classes = np.unique(ys)
  centroids = np.stack([xs[ys == c].mean(0) for c in classes])
  out["nearest centroid"] = np.mean(classes[fewshot.pairwise_distances(xq, centroids).argmin(1)] == yq)
  out["logistic probe"] = np.mean(LogisticRegression(C=1.0, max_iter=1000).fit(xs, ys).predict(xq) == yq)
  clf = fewshot.FrisClassifier().fit(xs, ys)
  label, conf = clf.decision(xq)
  out["FRiS-Stolp"] = np.mean(label == yq)
  out["stolps per class"] = np.mean([len(v) for v in clf.stolps_.values()])
  answered = conf >= ABSTAIN_AT
  out["FRiS coverage"] = np.mean(answered)
  out["FRiS answered acc"] = np.mean(label[answered] == yq[answered]) if answered.any() else np.nan
  return out


def mean_ci(values):
  v = np.asarray(values, float)
  v = v[~np.isnan(v)]
  return v.mean(), 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  flags.DEFINE_string("workdir", None, "a training workdir trained on base classes (config.dataset.classes)",
                      flag_values=fv)
  flags.DEFINE_string("layers", "stem_conv,stage1_block3,stage2_block3,stage3_block3",
                      "comma-separated module paths whose outputs are the features", flag_values=fv)
  flags.DEFINE_string("shots", "1,5,10", "comma-separated support examples per class", flag_values=fv)
  flags.DEFINE_integer("episodes", 300, "episodes per layer and shot count", flag_values=fv)
  flags.DEFINE_integer("queries", 15, "query examples per class and episode", flag_values=fv)
  flags.DEFINE_string("novel_classes", None, "comma-separated labels (default: all but the base ones)",
                      flag_values=fv)
  flags.DEFINE_alias("novel-classes", "novel_classes", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "draws the episodes", flag_values=fv)
  flags.DEFINE_string("out", None, "output folder for results.md and fewshot.png (default: WORKDIR/fewshot)",
                      flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)
  return fv


def main(argv=None):
  """The command on `argv` (without the program name), as a function."""
  return cli.call(define_flags, run, argv)


def run(a, args):
  if args:
    raise SystemExit(f"error: unexpected arguments {args}")
  layers = a.layers.split(",")
  shots = [int(s) for s in a.shots.split(",")]
  model, variables, config, info = build.load_workdir(a.workdir)
  base = tuple(config.dataset.classes or ())
  if not base:
    raise SystemExit(f"error: {a.workdir} was trained on every class (config.dataset.classes is empty); "
                     "train on base classes with --config.dataset.classes=(...) so the novel ones are unseen")
  novel = (tuple(int(c) for c in a.novel_classes.split(",")) if a.novel_classes
           else tuple(c for c in range(info.num_classes) if c not in base))
  if set(novel) & set(base):
    raise SystemExit(f"error: --novel_classes={novel} overlaps the base classes {base} the network was trained on")

  base_x, _ = viz.eval_images(config, info, split=config.dataset.train_split)
  base_test_x, base_test_y = viz.eval_images(config, info)
  config.dataset.classes = novel
  pool = [viz.eval_images(config, info, split=s) for s in (config.dataset.train_split, config.dataset.eval_split)]
  pool_x, pool_y = np.concatenate([x for x, _ in pool]), np.concatenate([y for _, y in pool])
  emb = lambda x: fewshot.embed(variables, layers, x, model=model)
  feats, base_feats, base_test_feats = emb(pool_x), emb(base_x), emb(base_test_x)
  print(f"{model.__class__.__name__} {config.model.name}: base classes {base} ({len(base_x)} training images), "
        f"novel {novel} ({len(pool_x)} images); {a.episodes} episodes of {len(novel)}-way, {a.queries} queries")

  results = {}   # (layer, shots) -> {column: (mean, ci)}
  compact = {}
  for layer in layers:
    mean = base_feats[layer].mean(0)
    f = cl2n(feats[layer], mean)
    compact[layer] = (fewshot.compactness(f, pool_y), fewshot.compactness(cl2n(base_test_feats[layer], mean),
                                                                         base_test_y))
    for k in shots:
      rng = np.random.default_rng([a.seed, k])          # the same episodes for every layer
      runs = []
      for _ in range(a.episodes):
        s, q = episode_indices(pool_y, novel, k, a.queries, rng)
        runs.append(run_episode(f[s], pool_y[s], f[q], pool_y[q], k))
      results[layer, k] = {col: mean_ci([r[col] for r in runs]) for col in runs[0]}
      print(f"  {layer} {k}-shot: " + ", ".join(f"{m} {results[layer, k][m][0]:.3f}" for m in METHODS), flush=True)

  md = table(results, compact, layers, shots, a, novel, base)
  out = a.out or os.path.join(a.workdir, "fewshot")
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.md"), "w") as fh:
    fh.write(md)
  png = plot(results, compact, layers, shots, os.path.join(out, "fewshot.png"), f"{config.model.name}, base "
             f"{base}, novel {novel}, {a.episodes} episodes, {a.queries} queries per class")
  print(md)
  print("wrote", os.path.join(out, "results.md"), "and", png)


def table(results, compact, layers, shots, a, novel, base):
  pct = lambda mc: f"{100 * mc[0]:.1f} ± {100 * mc[1]:.1f}"
  head = ["layer", "shots", *METHODS, "stolps / class", f"FRiS ≥ {ABSTAIN_AT}: acc (coverage)"]
  rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for layer in layers:
    for k in shots:
      r = results[layer, k]
      rows.append(f"| {layer} | {k} | " + " | ".join(pct(r[m]) for m in METHODS) +
                  f" | {r['stolps per class'][0]:.2f} | {pct(r['FRiS answered acc'])} "
                  f"({100 * r['FRiS coverage'][0]:.0f}%) |")
  rows += ["", "| layer | compactness, novel pool | compactness, base test set |", "|---|---|---|"]
  rows += [f"| {layer} | {compact[layer][0]:.3f} | {compact[layer][1]:.3f} |" for layer in layers]
  return "\n".join(rows) + "\n"


def plot(results, compact, layers, shots, png, title):
  plt = viz._plt()
  fig, axes = plt.subplots(1, len(layers) + 1, figsize=(4.2 * (len(layers) + 1), 4), squeeze=False)
  for ax, layer in zip(axes[0], layers):
    for m in METHODS:
      mean, ci = zip(*[results[layer, k][m] for k in shots])
      ax.errorbar(shots, 100 * np.array(mean), yerr=100 * np.array(ci), marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(f"{layer} (compactness {compact[layer][0]:.2f})", fontsize=9)
    ax.grid(True, alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  ax = axes[0, -1]
  pos = np.arange(len(layers))
  ax.bar(pos - 0.2, [compact[name][0] for name in layers], 0.4, label="novel pool")
  ax.bar(pos + 0.2, [compact[name][1] for name in layers], 0.4, label="base test set")
  ax.set_xticks(pos, layers, rotation=30, fontsize=7)
  ax.set_ylabel("compactness (mean FRiS)")
  ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  plt.close(fig)
  return png


if __name__ == "__main__":
  cli.program(define_flags, run)

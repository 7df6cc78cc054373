"""The commands the docs quote run: every `python -m <module> ...` in README.md, docs/guide/*.md and the config files'
docstrings names a module that exists, uses only flags its entry point defines, and overrides (`--config.a.b=v`) only
fields of the config
file it names, whose preset that file accepts.

The flags are read from each entry point's source (absl `DEFINE_*` calls, argparse `add_argument` calls), so
nothing heavy is imported; the configs are loaded as `--config` loads them. Commands in fenced blocks are meant to
be pasted as they are, so they must also give the flags their entry point requires; a command mentioned inline
(`python -m experiments.fewshot --workdir W`) may leave some out.
"""
import ast
import importlib.util
import pathlib
import re

import pytest
from ml_collections import ConfigDict

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
CONFIGS = sorted((ROOT / "configs").glob("[!_]*.py"))
PROJECT = ("cnnjax", "experiments", "benchmarks")  # modules whose flags are checked; others only exist
ABSL_BUILTIN = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "verbosity", "v",
                "logtostderr", "alsologtostderr", "log_dir", "stderrthreshold"}
HELP = {"help", "helpfull", "helpshort", "h"}
_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|\S+")


def commands(markdown: str):
  """[(argv after `python -m`, in_block)] for every command quoted in `markdown`: fenced blocks (lines joined at a
  trailing backslash) and inline code spans. A command ends at `&&`, `;`, `|`, a `#` comment or the quote that
  closes an enclosing string (`--command "... python -m x ..."`)."""
  found = []
  blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)
  prose = re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
  for text, in_block in [(b.replace("\\\n", " "), True) for b in blocks] + \
                        [(s.replace("\n", " "), False) for s in re.findall(r"`([^`]+)`", prose)]:
    for line in text.splitlines():
      for tail in line.split("python -m ")[1:]:
        argv = []
        for tok in _TOKEN.findall(tail):
          if tok in ("&&", "||", ";", "|") or tok.startswith("#"):
            break
          if tok[0] == tok[-1] and tok[0] in "'\"" and len(tok) > 1:
            argv.append(tok[1:-1])
          elif tok.count('"') % 2:  # the end of an enclosing "..." string
            argv.append(tok.replace('"', ""))
            break
          else:
            argv.append(tok)
        if argv and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", argv[0]):  # not a placeholder (`python -m ...`)
          found.append((argv, in_block))
  return found


def docstring_commands(path):
  """The commands in a Python file's docstring (lines joined at a trailing backslash), each complete."""
  doc = ast.get_docstring(ast.parse(path.read_text())) or ""
  return [c for c, _ in commands("```\n" + doc + "\n```\n")]


def entry_point(module: str):
  """{'kind': 'absl' | 'argparse' | None, 'flags': {name: {'bool', 'choices', 'config', 'required'}}, 'main'}
  read from the module's source."""
  rel = pathlib.Path(*module.split("."))
  path = ROOT / rel.with_suffix(".py")
  if not path.exists():
    path = ROOT / rel / "__main__.py"
  if not path.exists():
    return None
  tree = ast.parse(path.read_text())
  kind, defined, required = None, {}, set()
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
      continue
    fn = node.func.attr
    consts = [a.value for a in node.args if isinstance(a, ast.Constant)]
    kw = {k.arg: k.value for k in node.keywords}
    if fn.startswith("DEFINE_") and fn != "DEFINE_alias" and consts:  # the docs use the flags' own names
      kind = "absl"
      spec = {"bool": fn in ("DEFINE_bool", "DEFINE_boolean"), "config": fn == "DEFINE_config_file"}
      if fn == "DEFINE_enum":
        spec["choices"] = [e.value for e in node.args[2].elts]
      defined[consts[0]] = spec
    elif fn in ("mark_flags_as_required", "mark_flag_as_required"):
      required |= {e.value for e in node.args[0].elts} if fn.endswith("flags_as_required") else {consts[0]}
    elif fn == "add_argument":
      kind = "argparse"
      for name in (c for c in consts if c.startswith("--")):
        a = kw.get("action")
        action = a.value if isinstance(a, ast.Constant) else a.attr if isinstance(a, ast.Attribute) else None
        spec = {"bool": action in ("store_true", "store_false", "BooleanOptionalAction")}
        if "choices" in kw and isinstance(kw["choices"], (ast.List, ast.Tuple)):   # computed choices: not checked
          spec["choices"] = [e.value for e in kw["choices"].elts]
        defined[name[2:]] = spec
        if action == "BooleanOptionalAction":
          defined["no-" + name[2:]] = spec
        if getattr(kw.get("required"), "value", False):
          required.add(name[2:])
  if kind == "absl":
    for name, spec in list(defined.items()):
      if spec["bool"]:
        defined["no" + name] = spec
    defined.update({name: {"bool": name.startswith("help")} for name in ABSL_BUILTIN})
  if kind == "argparse":
    defined.update({"help": {"bool": True}, "h": {"bool": True}})
  main = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
  return {"kind": kind, "flags": defined, "required": required, "main": main}


def load_config(spec: str):
  """`path.py[:preset]` loaded as ml_collections' DEFINE_config_file loads it (without overrides)."""
  path, _, preset = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_doc_config", ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def problems(argv, in_block: bool):
  """What is wrong with `python -m <argv>`: a list of messages, empty when it would parse."""
  module, args = argv[0], argv[1:]
  if not module.startswith(PROJECT):
    try:
      return [] if importlib.util.find_spec(module) else [f"no module {module!r}"]
    except ModuleNotFoundError:  # its parent package is missing
      return [f"no module {module!r}"]
  ep = entry_point(module)
  if ep is None:
    return [f"no module {module!r} in {ROOT}"]
  if not ep["main"]:
    return [f"{module} has no `if __name__ == '__main__'` entry point"]
  out, given, values, config_spec = [], set(), {}, None
  i = 0
  while i < len(args):
    tok = args[i]
    i += 1
    if not tok.startswith("-") or tok == "-":
      continue
    name, eq, value = tok.lstrip("-").partition("=")
    if ep["kind"] == "argparse" and tok.startswith("-") and not tok.startswith("--") and name != "h":
      out.append(f"{tok}: short options are not used by {module}")
      continue
    if name.startswith("config.") and "config" in ep["flags"] and ep["flags"]["config"].get("config"):
      values.setdefault("config.", []).append(name[len("config."):])
      continue
    spec = ep["flags"].get(name)
    if spec is None:
      close = [f for f in ep["flags"] if f.replace("-", "_") == name.replace("-", "_")]
      out.append(f"--{name}: not a flag of {module}" + (f" (it spells it --{close[0]})" if close else ""))
      continue
    given.add(name)
    if not eq and not spec["bool"] and i < len(args) and not args[i].startswith("--"):
      value, i = args[i], i + 1
    if spec.get("choices") and value and value not in spec["choices"]:
      out.append(f"--{name}={value}: not one of {spec['choices']}")
    if spec.get("config"):
      config_spec = value
  if in_block and not given & HELP:
    out += [f"--{r} is required by {module}" for r in sorted(ep["required"] - given)]
  overrides = values.get("config.", [])
  if config_spec and "$" not in config_spec:  # `configs/transfer.py:$p` in a loop names no one preset
    try:
      config = load_config(config_spec)
    except (OSError, ValueError) as e:
      return out + [f"--config {config_spec}: {type(e).__name__}: {e}"]
    for field in overrides:
      node = config
      for part in field.split("."):
        if not isinstance(node, ConfigDict) or part not in node:
          out.append(f"--config.{field}: {config_spec} has no field {field!r}")
          break
        node = node[part]
  elif overrides:
    out.append(f"--config.{overrides[0]} without --config")
  return out


def test_commands_are_found_in_blocks_inline_and_inside_quoted_strings():
  """The extractor on a hand-written page: continued lines, two commands on one line, a command inside a quoted
  --command string, an inline span, comments; catches commands silently left unchecked."""
  page = ("Run `python -m experiments.fewshot --workdir W` or\n\n```bash\n"
          "pip install x && python -m experiments.main --config configs/resnet.py \\\n"
          "  --workdir runs/r '--config.dataset.classes=(0,1)'   # a comment --not-a-flag\n"
          "ssh h --command \"cd x && python -m experiments.sweep --workdir gs://b/r\" --other\n```\n")
  assert commands(page) == [
      (["experiments.main", "--config", "configs/resnet.py", "--workdir", "runs/r",
        "--config.dataset.classes=(0,1)"], True),
      (["experiments.sweep", "--workdir", "gs://b/r"], True),
      (["experiments.fewshot", "--workdir", "W"], False)]


def test_checker_catches_planted_mistakes():
  """Each kind of mistake the docs could make, planted once: the checker names it."""
  assert problems(["experiments.mian", "--workdir", "w"], False)
  assert problems(["experiments.sweep", "--config", "configs/ablation.py", "--workdir", "w", "--dry-run"], True)
  assert problems(["experiments.main", "--config", "configs/resnet.py", "--workdir", "w",
                   "--config.dataset.imagesize=3"], True)
  assert problems(["experiments.main", "--config", "configs/resnet.py:cifar11", "--workdir", "w"], True)
  assert problems(["experiments.main", "--config", "configs/resnet.py", "--workdir", "w", "--mode=test"], True)
  assert problems(["experiments.main", "--config", "configs/resnet.py"], True)            # --workdir missing
  assert problems(["experiments.plot", "runs/a", "--x", "time"], False)
  assert problems(["cnnjax.summary", "--input-shape", "8,8,1"], False)    # an alias kept for old scripts, not docs
  assert problems(["benchmarks.conv", "--write-table"], False)             # argparse: --write_table
  assert problems(["benchmarks.conv", "--shapes", "5x5"], False)           # argparse choices
  assert problems(["no_such_module_anywhere"], False)
  assert not problems(["experiments.main", "--config", "configs/kim_cnn.py:trec", "--workdir", "w",
                       "--config.dataset.vectors=v.txt", "--norestart", "--mode", "eval"], True)
  assert not problems(["cnnjax.pretrained", "--model", "googlenet", "--weights", "w", "--out", "o",
                       "--notransform_input"], True)
  assert not problems(["benchmarks.conv", "--table", "--write_table", "--shapes", "3x3", "-h"], True)
  assert not problems(["experiments.main", "--helpfull"], True)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_commands_name_real_modules_flags_and_fields(doc):
  found = commands(doc.read_text())
  bad = [f"python -m {' '.join(argv)}\n    " + "\n    ".join(p) for argv, in_block in found
         if (p := problems(argv, in_block))]
  assert not bad, f"{doc.relative_to(ROOT)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_config_docstring_starts_with_its_command(path):
  """Its first command trains this config, and every command it quotes would parse."""
  found = docstring_commands(path)
  assert found, f"{path.name}: no `python -m` command in its docstring"
  if path.name != "default.py":  # the base is never run on its own; its docstring names a config that is
    assert any(a.split(":")[0] == f"configs/{path.name}" for a in found[0]), found[0]
  bad = [f"python -m {' '.join(argv)}: " + "; ".join(p) for argv in found if (p := problems(argv, True))]
  assert not bad, f"{path.name}:\n" + "\n".join(bad)


def test_the_docs_quote_commands():
  """The README and the guide quote the main entry points (an extractor that finds nothing passes anything)."""
  found = {argv[0] for doc in DOCS for argv, _ in commands(doc.read_text())}
  assert {"experiments.main", "experiments.sweep", "experiments.plot", "cnnjax.pretrained"} <= found


def test_ci_runs_exactly_the_readme_test_command():
  """.ci/run's commands, joined with &&, are the README's test command (pip's -q aside): CI tests what a reader
  runs."""
  readme = (ROOT / "README.md").read_text()
  quoted = [line for line in readme.splitlines() if "python -m pytest" in line and line.startswith("python -m pip")]
  ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python -m ")]
  assert len(quoted) == 1 and ci
  assert " && ".join(line.replace(" -q ", " ") for line in ci) == quoted[0]

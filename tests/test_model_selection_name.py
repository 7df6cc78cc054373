"""`model_selection` under its old name `early_stopping`: a config file, a command-line override and a workdir
written before the rename still load and resume, with a warning, and select the same step."""
import json
import warnings

import pytest
from absl import flags
from ml_collections import config_flags

from cnnjax import config as config_lib
from cnnjax.errors import ConfigError
from configs import resnet
from tests.helpers import tiny_config


def test_the_old_name_in_a_config_is_moved_to_model_selection_with_a_warning():
  c = resnet.get_config()
  c.early_stopping.split, c.early_stopping.metric = "test", "loss"
  c.lock()
  with pytest.warns(DeprecationWarning, match=r"config.early_stopping is deprecated: rename it to "
                                              r"config.model_selection.*early_stopping.split='test'"):
    config_lib.validate(c)
  assert (c.model_selection.split, c.model_selection.metric) == ("test", "loss")
  assert "early_stopping" not in c and "early_stopping" not in json.loads(c.to_json_best_effort())


def test_a_config_without_the_old_name_warns_nothing_and_drops_it():
  c = resnet.get_config()
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    config_lib.validate(c)
  assert "early_stopping" not in c and (c.model_selection.split, c.model_selection.metric) == ("", "top1")


def test_a_command_line_override_of_the_old_name_reaches_model_selection():
  argv = ["prog", "--config=configs/resnet.py", "--config.early_stopping.split=dev"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)  # as experiments/main.py parses its flags
  with pytest.warns(DeprecationWarning):
    config_lib.validate(fv.config)
  assert fv.config.model_selection.split == "dev"


def test_both_names_set_to_different_values_is_an_error():
  c = resnet.get_config()
  c.early_stopping.split, c.model_selection.split = "dev", "test"
  with pytest.raises(ConfigError, match=r"config.early_stopping.split='dev' and config.model_selection.split="
                                        r"'test' disagree"):
    config_lib.validate(c)


def _old_style(saved: dict) -> dict:
  """A config.json as written before the rename: the block under its old name."""
  saved = dict(saved)
  saved["early_stopping"] = saved.pop("model_selection")
  return saved


def test_a_saved_config_with_the_old_name_is_compared_under_the_new_one():
  c = tiny_config(**{"model_selection.split": "test", "model_selection.metric": "loss"})
  config_lib.validate(c)
  saved = _old_style(json.loads(c.to_json_best_effort()))
  assert config_lib.resume_differences(saved, c) == []
  saved["early_stopping"]["metric"] = "top1"
  assert config_lib.resume_differences(saved, c) == ["model_selection.metric: 'top1' in the workdir, 'loss' now"]


@pytest.mark.slow
def test_an_old_workdir_resumes_from_an_old_style_config_and_selects_the_same(tmp_path):
  """A run stopped at step 3 whose config.json says early_stopping resumes, from a config that also says
  early_stopping, without a config-change error, and reports what an uninterrupted new-style run reports."""
  from cnnjax.train import loop
  new = {"model_selection.split": "test", "model_selection.metric": "loss"}
  old = {"early_stopping.split": "test", "early_stopping.metric": "loss"}
  loop.run(tiny_config(**new), str(tmp_path / "ref"))
  loop.run(tiny_config(**new), str(tmp_path / "old"), stop_after_steps=3)
  path = tmp_path / "old" / "config.json"
  path.write_text(json.dumps(_old_style(json.loads(path.read_text()))))
  with pytest.warns(DeprecationWarning):
    loop.run(tiny_config(**old), str(tmp_path / "old"))
  final = lambda w: json.loads((tmp_path / w / "final_metrics.json").read_text())
  assert final("old")["selected"] == final("ref")["selected"] and final("ref")["selected"]["step"] in (3, 6)


def test_plot_labels_do_not_tell_an_old_workdir_from_a_new_one_by_the_name(tmp_path):
  from etils import epath
  from experiments import plot
  c = tiny_config(**{"model_selection.split": "test"})
  config_lib.validate(c)
  new = json.loads(c.to_json_best_effort())
  for name, saved in (("new", new), ("old", _old_style(new))):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps(saved))
  assert plot.labels([epath.Path(tmp_path / "new"), epath.Path(tmp_path / "old")])[1] == {}

"""Text data: Kim's tokenizer on hand-worked sentences, line files and their errors, vocabulary from the training
split only, cross-validation folds, word-vector readers, TFDS text under mock data."""
import re
import struct
from unittest import mock

import numpy as np
import pytest

from cnnjax import data
from cnnjax.data import text
from cnnjax.errors import ConfigError
from configs import kim_cnn


@pytest.mark.parametrize("raw, lowercase, want", [
    # clitics split off, , and ? become tokens, case lowered
    ("It's not the movie I'd hoped for, isn't it?", True, "it 's not the movie i 'd hoped for , is n't it ?"),
    # : ; . [ ] are dropped; ( ) ! become tokens; 've 'll split
    ("You've (really) got: 3 cats; they'll win!", True, "you 've ( really ) got 3 cats they 'll win !"),
    ("[garbus] discards the potential . ", True, "garbus discards the potential"),
    ("we're sure they 're done", True, "we 're sure they 're done"),
    ("cr\u00e8me br\u00fbl\u00e9e `tis", True, "cr me br l e `tis"),             # non-ASCII letters become spaces
    ("What is Australia 's national flower ?", False, "What is Australia 's national flower ?"),   # TREC: case kept
    ("Don't\tStop", False, "Do n't Stop"),
])
def test_clean_str_hand_worked(raw, lowercase, want):
  assert text.clean_str(raw, lowercase) == want


def write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return path


def config(tmp_path, preset="mr", **overrides):
  c = kim_cnn.get_config(preset)
  c.dataset.data_dir = str(tmp_path)
  for k, v in overrides.items():
    c.dataset[k] = v
  return c


@pytest.mark.parametrize("line, message", [
    ("", "line 2: empty line"),
    ("x a sentence", "line 2: label 'x' is not a non-negative integer"),
    ("-1 a sentence", "line 2: label '-1' is not a non-negative integer"),
    ("2 a sentence", "line 2: label 2 is outside [0, 2)"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
  f = write(tmp_path / "rt-polarity.all", ["0 fine", line, "1 fine too"])
  with pytest.raises(ConfigError) as e:   # entry points print it as one FATAL line
    text.read_lines(str(f), 2)
  assert str(e.value).startswith(f"{f}, {message}")


def test_label_without_words_is_kept_as_padding(tmp_path):
  write(tmp_path / "TREC.train.all", ["0 what is it ?", "1 ", "2 who is he ?"])
  write(tmp_path / "TREC.test.all", ["1 "])
  c = config(tmp_path, "trec", dev_fraction=0.0)
  src, _ = data.get_source(c.dataset, "test")
  assert len(src) == 1 and not src[0]["tokens"].any() and src[0]["label"] == 1


def test_vocabulary_and_length_from_train_only(tmp_path, caplog):
  write(tmp_path / "TREC.train.all", ["0 What is a cat ?", "1 Who is a dog ?", "0 What is a cat cat ?"])
  write(tmp_path / "TREC.test.all", ["1 Who is a zebra cat ?", "0 What what what what what what what is it ?"])
  c = config(tmp_path, "trec", dev_fraction=0.0)
  train, info = data.get_source(c.dataset, "train")
  with caplog.at_level("INFO", logger="cnnjax"):
    test, _ = data.get_source(c.dataset, "test")
  assert "split test: 1 of 2 sentences truncated to 6 tokens, 0 without words" in caplog.text
  # By falling count, ties alphabetical: is, a, cat 3; What 2 (case kept for TREC), ? 3; Who, dog 1.
  vocab = text.vocab_of(c.dataset, "sentences/trec")
  assert vocab.words == ("<pad>", "<unk>", "?", "a", "cat", "is", "What", "Who", "dog")
  assert vocab.max_len == 6 and info.input_shape == (6,) and info.model_options == {"vocab_size": 9}
  np.testing.assert_array_equal(train[0]["tokens"], [6, 5, 3, 4, 2, 0])
  # 'zebra' is only in the test file: unknown. 'what' (lower case) is not 'What'. Longer: truncated to 6.
  np.testing.assert_array_equal(test[0]["tokens"], [7, 5, 3, 1, 4, 2])
  np.testing.assert_array_equal(test[1]["tokens"], [6, 1, 1, 1, 1, 1])


def test_vocab_saved_and_restored(tmp_path):
  vocab = text.build_vocab([["b", "a", "b"], ["c"]], lowercase=True)
  text.save_vocab(vocab, str(tmp_path))
  assert text.load_vocab(str(tmp_path)) == vocab
  assert text.load_vocab(str(tmp_path / "nothing")) is None
  # A restored vocabulary is used instead of the training split's.
  write(tmp_path / "TREC.train.all", ["0 x y"])
  write(tmp_path / "TREC.test.all", ["1 a b c a"])
  src, info = data.get_source(config(tmp_path, "trec").dataset, "test", vocab=vocab)
  np.testing.assert_array_equal(src[0]["tokens"], [3, 2, 4])     # b 2, a 3, c 4; max_len 3 from the vocab
  assert info.model_options["vocab_size"] == 5


def test_folds_deterministic_disjoint_covering():
  folds = text.cv_folds(103, 10, seed=7)
  again = text.cv_folds(103, 10, seed=7)
  assert all(np.array_equal(a, b) for a, b in zip(folds, again))
  assert sorted(len(f) for f in folds) == [10] * 7 + [11] * 3
  np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(103))
  assert not np.array_equal(folds[0], text.cv_folds(103, 10, seed=8)[0])


def test_cv_splits_of_a_file(tmp_path):
  write(tmp_path / "rt-polarity.all", [f"{i % 2} sentence{i}" for i in range(50)])
  seen = {}
  for fold in range(5):
    c = config(tmp_path, num_folds=5, fold=fold)
    splits = {s: text.line_split(c.dataset, "mr", s)[0] for s in text.SPLITS}
    assert len(splits["test"]) == 10 and len(splits["dev"]) == 4 and len(splits["train"]) == 36
    assert set().union(*splits.values()) == {f"sentence{i}" for i in range(50)}   # disjoint and covering
    assert sum(map(len, splits.values())) == 50
    seen[fold] = set(splits["test"])
    assert splits == {s: text.line_split(c.dataset, "mr", s)[0] for s in text.SPLITS}    # deterministic
  assert set().union(*seen.values()) == {f"sentence{i}" for i in range(50)}            # test folds cover all


def test_dev_drawn_from_a_train_file_leaves_it(tmp_path):
  """TREC has train and test files but no dev file: dev is a part of the train file and not trained on."""
  write(tmp_path / "TREC.train.all", [f"{i % 6} question{i}" for i in range(40)])
  write(tmp_path / "TREC.test.all", ["0 test question"])
  c = config(tmp_path, "trec", dev_fraction=0.25)
  splits = {s: text.line_split(c.dataset, "trec", s)[0] for s in text.SPLITS}
  assert len(splits["train"]) == 30 and len(splits["dev"]) == 10 and splits["test"] == ["test question"]
  assert set(splits["train"]) | set(splits["dev"]) == {f"question{i}" for i in range(40)}   # disjoint, covering


@pytest.mark.parametrize("overrides, field", [({"fold": 10}, "fold=10"), ({"fold": -1}, "fold=-1"),
                                              ({"num_folds": 1}, "num_folds=1"),
                                              ({"dev_fraction": 1.0}, "dev_fraction=1.0")])
def test_bad_fold_is_a_config_error(tmp_path, overrides, field):
  write(tmp_path / "rt-polarity.all", ["0 a", "1 b"])
  with pytest.raises(ConfigError, match=f"config.dataset.{field} is invalid"):
    data.get_source(config(tmp_path, **overrides).dataset, "train")


def test_unknown_and_missing(tmp_path):
  with pytest.raises(ConfigError, match="unknown data set dataset.name='sentences/imdb'"):
    data.get_source(config(tmp_path, name="sentences/imdb").dataset, "train")
  with pytest.raises(FileNotFoundError, match="rt-polarity.all does not exist"):
    data.get_source(config(tmp_path).dataset, "train")
  write(tmp_path / "rt-polarity.all", ["0 a", "1 b"])
  with pytest.raises(ConfigError, match="split 'valid' of data set sentences/mr is invalid"):
    data.get_source(config(tmp_path).dataset, "valid")


VECTORS = {"cat": [0.5, -1.25, 3.0], "dog": [1e-3, 2.5e-7, -0.75], "zebra": [9.0, 8.0, 7.0]}


def test_glove_reader_exact(tmp_path):
  f = tmp_path / "v.txt"
  f.write_text("".join(f"{w} " + " ".join(repr(np.float32(x).item()) for x in v) + "\n" for w, v in VECTORS.items()))
  got, dim = text.read_vectors(str(f))
  assert dim == 3 and sorted(got) == sorted(VECTORS)
  for w, v in VECTORS.items():
    np.testing.assert_array_equal(got[w], np.asarray(v, np.float32))
  assert sorted(text.read_vectors(str(f), {"dog", "emu"})[0]) == ["dog"]


def test_word2vec_binary_reader_exact(tmp_path):
  f = tmp_path / "v.bin"
  body = b"".join(w.encode() + b" " + struct.pack("<3f", *v) + b"\n" for w, v in VECTORS.items())
  f.write_bytes(b"3 3\n" + body)
  got, dim = text.read_vectors(str(f))
  assert dim == 3
  for w, v in VECTORS.items():
    np.testing.assert_array_equal(got[w], np.asarray(v, np.float32))
  f.write_bytes(b"3 3\n" + body[:-9])
  with pytest.raises(ConfigError, match="ends inside the vector of word b'zebra'"):
    text.read_vectors(str(f))


def test_pretrained_init(tmp_path):
  import jax
  f = tmp_path / "v.txt"
  f.write_text("".join(f"{w} " + " ".join(map(str, v)) + "\n" for w, v in VECTORS.items()))
  vocab = text.Vocab(("<pad>", "<unk>", "cat", "emu", "Dog"), 4, False)   # cased (as TREC): 'Dog' gets 'dog'
  init = text.pretrained_init(str(f), vocab)
  e = np.asarray(init(jax.random.PRNGKey(0), (5, 3)))
  np.testing.assert_array_equal(e[0], 0.0)
  np.testing.assert_array_equal(e[2], np.float32(VECTORS["cat"]))
  np.testing.assert_array_equal(e[4], np.float32(VECTORS["dog"]))
  for row in e[[1, 3]]:   # <unk> and emu (no vector): U[-0.25, 0.25] from the key
    assert np.all(np.abs(row) <= 0.25) and np.all(row != 0)
  assert not np.array_equal(e[1], np.asarray(init(jax.random.PRNGKey(1), (5, 3)))[1])
  want = (f"word vectors {f} have dimension 3 for a vocabulary of 5; the model wants (5, 300) "
          "(config.model.embed_dim=300)")
  with pytest.raises(ConfigError, match=re.escape(want)):
    init(jax.random.PRNGKey(0), (5, 300))


def test_text_batches_through_the_pipelines(tmp_path):
  write(tmp_path / "TREC.train.all", [f"{i % 6} word{i} and more" for i in range(12)])
  write(tmp_path / "TREC.test.all", ["0 word1 word2", "1 word3", "2 unknown"])
  c = config(tmp_path, "trec", dev_fraction=0.0)
  c.batch_size, c.eval_batch_size = 4, 2
  src, info = data.get_source(c.dataset, "train")
  batch = next(iter(data.train_dataset(c, src, info)))
  assert batch["tokens"].dtype == np.int32 and batch["tokens"].shape == (4, 3)
  by_tokens = {tuple(src[i]["tokens"]): src[i]["label"] for i in range(len(src))}
  assert [by_tokens[tuple(t)] for t in batch["tokens"]] == list(batch["label"])
  test, _ = data.get_source(c.dataset, "test")
  batches = list(data.eval_dataset(c, test, info))
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), [True, True, True, False])
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:3], [0, 1, 2])


@pytest.mark.parametrize("name, split, num_classes", [("glue/sst2", "validation", 2), ("trec", "test", 6)])
def test_tfds_text_under_mock_data(tmp_path, name, split, num_classes):
  import tensorflow_datasets as tfds
  c = config(tmp_path, name=name, train_split="train", data_dir=None)
  # mock_data fakes the reading, not the prepared files: is_prepared is patched to say they exist.
  with tfds.testing.mock_data(num_examples=6), \
       mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    src, info = data.get_source(c.dataset, split)
    raw = tfds.data_source(name, split=split)
    vocab = text.vocab_of(c.dataset, name)
  assert len(src) == 6 and info.num_classes == num_classes
  key = text.TFDS_TEXT[name]
  for i in range(6):
    want = vocab.encode(text.tokenize(str(raw[i][key.text]), key.lowercase))
    np.testing.assert_array_equal(src[i]["tokens"], want)
    assert src[i]["label"] == int(raw[i][key.label])


def test_tfds_text_not_prepared_names_the_build_command(tmp_path):
  c = config(tmp_path, name="glue/sst2", train_split="train")
  with pytest.raises(data.NotPreparedError, match=re.escape(f"tfds build glue/sst2 --file_format=array_record "
                                                            f"--data_dir={tmp_path}")):
    data.get_source(c.dataset, "validation")

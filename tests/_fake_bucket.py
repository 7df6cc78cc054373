"""Runs a module (`python -m tests._fake_bucket ROOT MODULE ARGS...`) with `gs://` served from the local folder
ROOT: a non-local file system without network, for testing that workdir URLs stay URLs end to end.

epath reaches `gs://` through fsspec's 'gcs' protocol: here a local file system that maps `gs://b/x` to
`ROOT/b/x`. Orbax writes array data through TensorStore's own GCS driver: here the paths it gives TensorStore are
mapped to ROOT, so TensorStore's file driver writes them. Everything else (Orbax's bucket code paths included) runs as
on GCS.
"""
import runpy
import sys

import fsspec
from fsspec.implementations.local import LocalFileSystem


def install(root: str) -> None:
  """`gs://` for epath (fsspec) and for Orbax's TensorStore writes, both served from the folder `root`."""
  local = install_fsspec(root)
  import os
  from orbax.checkpoint._src.path import gcs_utils
  from orbax.checkpoint._src.serialization import tensorstore_utils
  tensorstore_utils._normalize_path = lambda p: local(os.path.normpath(p).replace("gs:/", "gs://"))
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False  # asks the GCS API otherwise


def install_fsspec(root: str):
  """`gs://` for epath only (enough for the workdir's JSON files and lock); returns the path mapping."""
  root = root.rstrip("/")

  def local(path) -> str:
    path = path if isinstance(path, str) else str(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        return f"{root}/{path[len(prefix):]}"
    return path

  class FakeGCS(LocalFileSystem):
    protocol = ("gs", "gcs")

    @classmethod
    def _strip_protocol(cls, path):
      if isinstance(path, (list, tuple)):
        return [cls._strip_protocol(p) for p in path]
      return super()._strip_protocol(local(path))

    @staticmethod
    def _bucket(p):  # a local result as a bucket listing gives it: 'bucket/dir/file'
      return p[len(root) + 1:] if isinstance(p, str) and p.startswith(root + "/") else p

    def glob(self, path, **kwargs):
      return [self._bucket(p) for p in super().glob(path, **kwargs)]

    def walk(self, path, *args, **kwargs):
      for top, dirs, files in super().walk(path, *args, **kwargs):
        yield self._bucket(top), dirs, files

  fsspec.register_implementation("gcs", FakeGCS, clobber=True)
  fsspec.register_implementation("gs", FakeGCS, clobber=True)
  return local


if __name__ == "__main__":
  install(sys.argv[1])
  module = sys.argv[2]
  sys.argv = [module, *sys.argv[3:]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)

"""Writing a file so that no reader ever sees it half-written, and no failure destroys it.

The content goes to a temporary name beside the target, which is then renamed over it: on a
local file system the rename is atomic; on gs:// an object appears only once complete. Paths go
through etils.epath, so both work the same way. `check_scheme` refuses, before anything is
written, a `SCHEME://` path that TensorFlow's file systems (which epath uses for such paths) lack;
every program calls it on each path it is given, where the path enters.
"""

import contextlib
import json
import uuid
from collections.abc import Iterator

from etils import epath

from big_transfer import errors


def check_scheme(path, what: str, value: str | None = None) -> None:
  """Raises a ConfigError naming the supported schemes when TensorFlow has no file system for
  `path`'s `SCHEME://` prefix. A path without a scheme is local and always passes.

  Args:
    path: the path (local, gs://, ...); None or "" passes.
    what: the flag that gave it ("--workdir", "--config.init").
    value: the flag's whole value when `path` is a part of it ("folder:DIR", "A;B").
  """
  scheme, separator, _ = str(path or "").partition("://")
  if not separator:
    return
  import tensorflow as tf  # Only for a SCHEME:// path, so this module imports without TensorFlow.
  supported = sorted(s for s in tf.io.gfile.get_registered_schemes() if s)
  if scheme not in supported:
    raise errors.ConfigError(f"{what}={value or path}: TensorFlow's file systems have no "
                             f"{scheme}:// scheme; use a local path or one of "
                             f"{', '.join(s + '://' for s in supported)}.")


def temporary_path(path: epath.Path) -> epath.Path:
  """A unique hidden name beside `path`, for staging what will be renamed to `path`."""
  return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def staged(path) -> Iterator[epath.Path]:
  """Yields a temporary file name beside `path` to write; renamed to `path` when the block ends
  normally, removed when it fails, so `path` is only ever the old file or the whole new one."""
  path = epath.Path(path)
  staging = temporary_path(path)
  try:
    yield staging
    staging.replace(path)
  finally:
    if staging.exists():
      staging.unlink()


def write_bytes(path, content: bytes) -> None:
  """Replaces `path` with `content` in one step; on failure the old file stays as it was."""
  with staged(path) as staging:
    staging.write_bytes(content)


def write_text(path, content: str) -> None:
  write_bytes(path, content.encode("utf-8"))


def write_json(path, content) -> None:
  """`content` as indented JSON with sorted keys, written atomically."""
  write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")

"""Writing a file so that no reader ever sees it half-written, and no failure destroys it.

The content goes to a temporary name beside the target, which is then renamed over it: on a
local file system the rename is atomic; on gs:// an object appears only once complete. Paths go
through etils.epath, so both work the same way.
"""

import json
import uuid

from etils import epath


def temporary_path(path: epath.Path) -> epath.Path:
  """A unique hidden name beside `path`, for staging what will be renamed to `path`."""
  return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def write_bytes(path, content: bytes) -> None:
  """Replaces `path` with `content` in one step; on failure the old file stays as it was."""
  path = epath.Path(path)
  staged = temporary_path(path)
  try:
    staged.write_bytes(content)
    staged.replace(path)
  finally:
    if staged.exists():
      staged.unlink()


def write_text(path, content: str) -> None:
  write_bytes(path, content.encode("utf-8"))


def write_json(path, content) -> None:
  """`content` as indented JSON with sorted keys, written atomically."""
  write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")

"""What the source of a config file says about its fields: which fields it assigns, the comment
block above each (a field's doc), the groups it creates and the config it starts from.

Read with `ast` and `tokenize` only: nothing is imported or run."""

import ast
import dataclasses
import io
import tokenize


@dataclasses.dataclass(frozen=True)
class ConfigSource:
  """What the source of one config file says about its fields.

  Attributes:
    filename: Where the source came from, for messages.
    parent: The config module it starts from (`config = base.get_config()` -> 'base'); None
      for a config built from a fresh ConfigDict.
    comments: Dotted field path -> the comment block above its assignment, joined into one
      paragraph ('' when there is none), in source order.
    lines: Dotted field path -> the line of its (last) assignment.
    groups: Dotted path of each group the file creates (`model = config.model =
      ml_collections.ConfigDict()`) -> the comment above it. A group created here replaces
      whatever the parent had under that path.
    docstring: The module docstring ('' when there is none).
  """
  filename: str
  parent: str | None
  comments: dict[str, str]
  lines: dict[str, int]
  groups: dict[str, str]
  docstring: str


def _comment_only_lines(source: str) -> dict[int, str]:
  """Line number -> comment text, for the lines that hold a comment and no code."""
  comments, code_lines = {}, set()
  non_code = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
              tokenize.ENDMARKER)
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string
    elif token.type not in non_code:
      code_lines.update(range(token.start[0], token.end[0] + 1))
  return {line: text.lstrip("#").strip() for line, text in comments.items()
          if line not in code_lines}


def _comment_above(line: int, comment_lines: dict[int, str]) -> str:
  """The comment block that ends on the line just above `line`, as one paragraph."""
  block = []
  line -= 1
  while line in comment_lines:
    block.append(comment_lines[line])
    line -= 1
  # Linter pragmas are not documentation.
  return " ".join(text for text in reversed(block) if text and not text.startswith("pylint:"))


def _dotted(node: ast.expr) -> list[str] | None:
  """`config.model.hidden_size` -> ['config', 'model', 'hidden_size']; None if not a name chain."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  parts.append(node.id)
  return parts[::-1]


def _is_config_dict(value: ast.expr) -> bool:
  """Whether `value` is `ml_collections.ConfigDict()` (or `ConfigDict()`)."""
  if not isinstance(value, ast.Call):
    return False
  name = _dotted(value.func)
  return bool(name) and name[-1] == "ConfigDict"


def _parent_module(value: ast.expr) -> str | None:
  """'base' for `base.get_config()`; None for anything else."""
  if isinstance(value, ast.Call):
    name = _dotted(value.func)
    if name and len(name) == 2 and name[1] == "get_config":
      return name[0]
  return None


def parse_config_source(source: str, filename: str = "<config>") -> ConfigSource:
  """Finds every field a config file assigns, with the comment block above each.

  Names are followed through the file: `config = base.get_config()` or `config =
  ml_collections.ConfigDict()` is the root, and `model = config.model =
  ml_collections.ConfigDict()` makes `model.x = ...` the field `model.x`. Assignments to
  anything else (locals, other objects) are not fields and are left out.

  Args:
    source: The Python source of a config file.
    filename: Its name, for messages.

  Returns:
    The ConfigSource.
  """
  tree = ast.parse(source, filename)
  comment_lines = _comment_only_lines(source)
  prefixes: dict[str, str] = {}  # Local name -> the dotted path it stands for ('' = the root).
  parent, comments, lines, groups = None, {}, {}, {}
  assignments = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Assign)),
                       key=lambda node: (node.lineno, node.col_offset))
  for node in assignments:
    comment = _comment_above(node.lineno, comment_lines)
    is_group = _is_config_dict(node.value)
    from_module = _parent_module(node.value)
    # The attribute targets first: `model = config.model = ConfigDict()` names 'model' after
    # the path config.model resolves to.
    paths = []
    for target in node.targets:
      parts = _dotted(target)
      if parts and len(parts) > 1 and parts[0] in prefixes:
        paths.append(".".join(p for p in [prefixes[parts[0]], *parts[1:]] if p))
    for path in paths:
      if is_group:
        groups[path] = comment
      else:
        comments[path] = comment
        lines[path] = node.lineno
    for target in node.targets:
      if not isinstance(target, ast.Name):
        continue
      if paths and is_group:
        prefixes[target.id] = paths[0]
      elif from_module is not None or (is_group and "" not in prefixes.values()):
        prefixes[target.id] = ""
        parent = from_module or parent
      else:  # Rebound to something that is not (part of) the config.
        prefixes.pop(target.id, None)
  return ConfigSource(filename=filename, parent=parent, comments=comments, lines=lines,
                      groups=groups, docstring=ast.get_docstring(tree) or "")


def source_problems(parsed: ConfigSource) -> list[str]:
  """One line for each field the file assigns without a comment above it."""
  return [f"{parsed.filename}:{parsed.lines[path]}: {path} has no comment above it"
          for path, comment in parsed.comments.items() if not comment]

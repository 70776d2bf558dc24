"""Set one dotted key in YAML text in place: the line of that value changes, every comment and the layout stay.

The user's experiment YAML is theirs (comments, order, spacing), so a tool that writes a value into it -- the LR
finder's `--write-config` -- edits that one line. Block mappings (`optim:` then indented keys) and one-line flow
mappings (`optim: {name: adamw, lr: 0.003}`) are edited where the key is; an absent key is added under its section (or
the section is added at the end). The result is parsed back and must equal the old content with that one value set.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from .errors import KitError

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+)\s*:(?P<rest>(\s.*)?)$")


def yaml_scalar(value: Any) -> str:
    """`value` as a one-line YAML scalar that reads back as the same value (1e-05 -> 1.0e-05, a float)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return text[:-3].strip() if text.endswith("\n...") or text.endswith("...") else text


def _split_comment(rest: str) -> Tuple[str, str]:
    """(value text, trailing comment with the whitespace before it) of what follows `key:`."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            value = rest[:i].rstrip()
            return value, rest[len(value):]
    return rest.rstrip(), ""


def _key_lines(lines: List[str]) -> List[Tuple[int, List[str], int, str]]:
    """(line index, key path, indent, text after the colon) of every `key:` line of the block mappings."""
    out = []
    stack: List[Tuple[int, str]] = []  # (indent, key) of the open sections
    for i, line in enumerate(lines):
        body = line.rstrip("\n")
        stripped = body.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-") or stripped in ("---", "..."):
            continue
        m = _KEY_LINE.match(body)
        if m is None:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m["key"]]
        out.append((i, path, indent, m["rest"]))
        if not _split_comment(m["rest"])[0].strip():
            stack.append((indent, m["key"]))
    return out


def _set_in(data: Dict[str, Any], path: List[str], value: Any) -> None:
    for part in path[:-1]:
        node = data.get(part)
        if not isinstance(node, dict):
            node = data[part] = {}
        data = node
    data[path[-1]] = value


def _nested_lines(path: List[str], value: Any, indent: int, step: int) -> List[str]:
    lines = [f"{' ' * (indent + step * d)}{part}:\n" for d, part in enumerate(path[:-1])]
    return lines + [f"{' ' * (indent + step * (len(path) - 1))}{path[-1]}: {yaml_scalar(value)}\n"]


def _edit(lines: List[str], target: List[str], value: Any) -> List[str]:
    keys = _key_lines(lines)
    for i, path, indent, rest in keys:
        text, comment = _split_comment(rest)
        head = lines[i][:len(lines[i].rstrip("\n")) - len(rest)]
        if path == target:
            if not text.strip():
                raise KitError(f"{'.'.join(target)}: is a section in the YAML, not a value")
            lines[i] = f"{head} {yaml_scalar(value)}{comment}\n"
            return lines
        if path == target[:len(path)] and text.strip().startswith("{"):  # a one-line flow mapping holds the key
            import yaml

            mapping = yaml.safe_load(text) or {}
            _set_in(mapping, target[len(path):], value)
            flow = yaml.safe_dump(mapping, default_flow_style=True, sort_keys=False, width=1 << 30).strip()
            lines[i] = f"{head} {flow}{comment}\n"
            return lines
    return _insert(lines, keys, target, value)


def _insert(lines: List[str], keys: List[Tuple[int, List[str], int, str]], target: List[str], value: Any
            ) -> List[str]:
    """Add the absent key under its deepest existing section, or the whole section path at the end."""
    for depth in range(len(target) - 1, 0, -1):
        sections = [(n, i, ind) for n, (i, p, ind, rest) in enumerate(keys)
                    if p == target[:depth] and not _split_comment(rest)[0].strip()]
        if not sections:
            continue
        n, i, indent = sections[0]
        children = [k for k in keys[n + 1:] if len(k[1]) > depth and k[1][:depth] == target[:depth]]
        child_indent = children[0][2] if children else indent + 2
        end = i + 1  # after the section's last value line (comments after it stay with what follows)
        for j in range(i + 1, len(lines)):
            body = lines[j].rstrip("\n")
            if not body.strip() or body.strip().startswith("#"):
                continue
            if len(body) - len(body.lstrip(" ")) <= indent:
                break
            end = j + 1
        new = _nested_lines(target[depth:], value, child_indent, max(2, child_indent - indent))
        return lines[:end] + new + lines[end:]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines + _nested_lines(target, value, 0, 2)


def set_yaml_value(text: str, dotted: str, value: Any) -> str:
    """`text` with the YAML key `dotted` (e.g. optim.lr) set to `value`; only that line changes (or one is added)."""
    import yaml

    target = dotted.split(".")
    try:
        before = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise KitError(f"not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(before, dict):
        raise KitError("the YAML is not a mapping of sections; cannot set a key in it")
    lines = text.splitlines(keepends=True)
    new = "".join(_edit(lines, target, value))
    expected: Optional[Dict[str, Any]] = before
    _set_in(expected, target, value)
    try:
        after = yaml.safe_load(new)
    except yaml.YAMLError:
        after = None
    if after != expected:
        raise KitError(f"{dotted}: could not set it in place without changing other content; set "
                       f"{dotted}: {yaml_scalar(value)} by hand")
    return new

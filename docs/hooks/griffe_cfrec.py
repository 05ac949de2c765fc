"""Griffe extension for the API reference: what static analysis of cfrec's sources cannot see.

- Signatures made at import time. A model's ``__init__`` is written by a class decorator (a
  dataclass transform), so the source holds no ``__init__`` to read. Where the runtime class has
  one of its own that the source lacks, its signature is taken from the imported class, whatever
  the mechanism that made it.
- Parameters documented together (``path, line, field`` over one description) are split into one
  entry each, so each shows its own type and default from the signature (griffe's numpy parser
  would give all of them the first one's); the later ones point to the first's description.
- Sphinx roles in docstrings (``:class:`Recommender```, ``:func:`~cfrec.ranking.rank```) become
  links to the reference when their target is documented there, and inline code otherwise; a
  role naming nothing in cfrec (a renamed or removed function) is a warning, an error under
  ``mkdocs build --strict``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from html import escape
from pathlib import Path
from typing import Any

import griffe

SRC = Path(__file__).resolve().parents[2] / "src"

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`([^`]+)`")
_TITLED = re.compile(r"^(.*?)\s*<([^<>]+)>$")
_SECTION_RULE = re.compile(r"\s*-{3,}\s*")
_NAMES_LINE = re.compile(r"[A-Za-z_]\w*(?:, [A-Za-z_]\w*)+")


def _runtime(path: str) -> Any:
    """The imported object at a dotted path, or None."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _annotation(text: Any, scope: griffe.Object) -> str | griffe.Expr | None:
    if text is inspect.Parameter.empty:
        return None
    if not isinstance(text, str):
        text = inspect.formatannotation(text)
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    return griffe.safe_get_annotation(node, parent=scope) or text  # type: ignore[arg-type]


def _add_runtime_init(cls: griffe.Class) -> None:
    if "__init__" in cls.members:
        return
    runtime = _runtime(cls.path)
    if not inspect.isclass(runtime) or "__init__" not in vars(runtime):
        return
    try:
        signature = inspect.signature(runtime)
    except (TypeError, ValueError):
        return
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for param in signature.parameters.values():
        default = None if param.default is inspect.Parameter.empty else repr(param.default)
        parameters.append(griffe.Parameter(
            param.name,
            annotation=_annotation(param.annotation, cls),
            kind=griffe.ParameterKind(param.kind.description),
            default=default,
        ))
    cls.set_member("__init__", griffe.Function(
        "__init__", lineno=0, endlineno=0, parent=cls,
        parameters=griffe.Parameters(*parameters), returns="None"))


def _resolve_in_scope(head: str, scope: griffe.Object) -> str | None:
    """The full path ``head`` names where ``scope``'s docstring is, inherited members included."""
    node: griffe.Object | None = scope
    while node is not None:
        if node.is_class and head in node.all_members:  # type: ignore[attr-defined]
            return node.all_members[head].path  # type: ignore[attr-defined]
        node = node.parent
    try:
        return scope.resolve(head)
    except Exception:  # noqa: BLE001  # griffe raises NameResolutionError and friends
        return "cfrec" if head == "cfrec" else None


def _exists(identifier: str, scope: griffe.Object) -> bool:
    try:
        scope.modules_collection[identifier]
    except Exception:  # noqa: BLE001  # KeyError, or an alias that no longer resolves
        return False
    return True


def _role_to_markdown(match: re.Match[str], scope: griffe.Object) -> str:
    """A Sphinx role as an optional cross-reference; a dead one into cfrec is reported.

    A target in cfrec must exist (a renamed function leaves no dead reference behind: griffe's
    warning fails the strict build). A dotted name outside cfrec (``numpy.lexsort``) is left as
    inline code.
    """
    role = match.group(0)
    target = match.group(1).strip()
    titled = _TITLED.match(target)
    title = None
    if titled:
        title, target = titled.group(1), titled.group(2)
    short = target.startswith("~")
    target = target.lstrip("~.")
    display = title or (target.rsplit(".", 1)[-1] if short else target)
    if not display.endswith(")") and role.startswith((":func:", ":meth:")):
        display += "()"
    code = f"<code>{escape(display)}</code>"
    head, _, rest = target.partition(".")
    full = _resolve_in_scope(head, scope)
    identifier = (f"{full}.{rest}" if rest else full) if full else None
    internal = identifier is not None and (identifier == "cfrec" or identifier.startswith("cfrec."))
    if (internal and not _exists(identifier, scope)) or (identifier is None and not rest):  # type: ignore[arg-type]
        griffe.logger.warning(f"{scope.path}: docstring reference {role} names nothing in "
                              "cfrec (renamed or removed?)")
        return code
    if not internal:
        return code
    return f'<autoref identifier="{escape(identifier)}" optional>{code}</autoref>'  # type: ignore[arg-type]


def _split_parameter_groups(text: str) -> str:
    """``a, b`` over one description in a numpy Parameters section -> ``a`` with it, ``b`` too.

    Only for untyped groups: a group with a ``: type`` shares that type, which griffe handles.
    """
    lines = text.split("\n")
    out: list[str] = []
    in_parameters = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and _SECTION_RULE.fullmatch(lines[i + 1]):
            in_parameters = line.strip() in ("Parameters", "Other Parameters")
            out += [line, lines[i + 1]]
            i += 2
            continue
        if in_parameters and _NAMES_LINE.fullmatch(line):
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith(" ")):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():
                j -= 1
            first, *others = line.split(", ")
            out += [first, *lines[i + 1:j]]
            for name in others:
                out += [name, f"    See ``{first}`` above."]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _rewrite_docstrings(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        text = _split_parameter_groups(obj.docstring.value)
        if ":`" in text:
            text = _ROLE.sub(lambda m: _role_to_markdown(m, obj), text)
        obj.docstring.value = text
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite_docstrings(member)  # type: ignore[arg-type]


def _walk_classes(obj: griffe.Object) -> None:
    for member in list(obj.members.values()):
        if member.is_alias:
            continue
        if member.is_class:
            _add_runtime_init(member)  # type: ignore[arg-type]
        if member.is_class or member.is_module:
            _walk_classes(member)  # type: ignore[arg-type]


class CfrecDocs(griffe.Extension):
    """Runtime signatures for decorator-made ``__init__`` methods; Sphinx roles as links."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk_classes(pkg)
        _rewrite_docstrings(pkg)

"""MkDocs hook: the API reference pages, generated from the packages' public names, and the notebooks.

Each documented package gets one page (``reference/<package>.md``) holding a mkdocstrings
``:::`` directive for every name in its ``__all__``. A directive names the object where it is
defined (``cfrec.models.als.ALS``), found by importing the package, so moving a module needs no
edit here and a name that leaves ``__all__`` leaves the reference. A name exported by several
packages is documented once, on the most specific package's page, and linked from the others.

The notebooks (``notebooks/*.ipynb``) join the site as they are committed, outputs included
(mkdocs-jupyter renders them without executing), and the README is its home page.

``tests/test_docs.py`` imports this file to check that the pages cover every public name.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

#: The documented packages, most general first; each gets ``reference/<name>.md``.
PACKAGES = ("cfrec", "cfrec.data", "cfrec.models", "cfrec.evaluation", "cfrec.serve")
#: Where a notebook page lives in the site: ``notebooks/<file>.ipynb``.
NOTEBOOKS = ROOT / "notebooks"

_DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)
_KINDS = (("class", "Classes"), ("model", "Models"), ("function", "Functions"), ("data", "Data"),
          ("module", "Modules"))


def _import_sources() -> None:
    """Document the checkout's own sources, the ones mkdocstrings reads (``paths: [src]``)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def page_path(package: str) -> str:
    """The reference page of ``package``, relative to the docs folder."""
    return f"reference/{package}.md"


@dataclass(frozen=True)
class Entry:
    """One public object: where it is defined and the packages that export it."""

    path: str  # the identifier the ``:::`` directive uses
    kind: str  # "model" (a concrete Recommender), "class", "function", "data" or "module"
    exported_by: tuple[tuple[str, str], ...]  # (package, public name) pairs
    home: str  # the package whose page documents it


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        base = getattr(importlib.import_module("cfrec.models"), "Recommender", None)
        if inspect.isclass(base) and issubclass(obj, base) and not inspect.isabstract(obj):
            return "model"  # a concrete recommender: its own section
        return "class"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return "function"
    return "data"


def _defined_path(package: str, name: str, obj: Any) -> str:
    """The identifier of ``obj`` where it is defined, falling back to ``package.name``.

    Classes and functions know their module and qualified name; plain data (a version string, a
    table of datasets) does not, and mkdocstrings follows the package's import to it instead.
    """
    if inspect.ismodule(obj):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        return f"{module}.{qualname}"
    return f"{package}.{name}"


def public_names(package: str) -> list[str]:
    """The names ``package`` declares public (its ``__all__``)."""
    _import_sources()
    return list(importlib.import_module(package).__all__)


def collect(packages: tuple[str, ...] = PACKAGES) -> list[Entry]:
    """Every public object of ``packages``, once each, with the page that documents it.

    Its home is the most specific package whose ``__all__`` lists it; failing that (a model class
    that only the top-level package lists), the most specific package whose module tree defines it
    and that gives it out under the same name; failing that, the top-level package.
    """
    _import_sources()
    modules: dict[str, ModuleType] = {p: importlib.import_module(p) for p in packages}
    by_id: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
    order: list[int] = []
    for package, module in modules.items():
        for name in module.__all__:
            obj = getattr(module, name)
            key = id(obj)
            if key not in by_id:
                by_id[key] = (obj, [])
                order.append(key)
            by_id[key][1].append((package, name))
    specific = sorted(packages, key=lambda p: -p.count("."))
    entries = []
    for key in order:
        obj, exported = by_id[key]
        package, name = max(exported, key=lambda pair: pair[0].count("."))
        home = package
        if "." not in home:
            defined = getattr(obj, "__module__", "") or ""
            for candidate in specific:
                if defined.startswith(candidate + ".") and getattr(
                        modules[candidate], name, None) is obj:
                    home = candidate
                    break
        entries.append(Entry(_defined_path(package, name, obj), _kind(obj), tuple(exported), home))
    return entries


def _options(entry: Entry) -> list[str]:
    """Per-directive options: a long constant (a table of datasets) is shown without its value."""
    if entry.kind == "data" and len(repr(resolve(entry.path))) > 80:
        return ["    options:", "      show_attribute_values: false"]
    return []


def reference_pages(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """The Markdown of every reference page, by path relative to the docs folder."""
    entries = collect(packages)
    pages = {}
    for package in packages:
        lines = [
            f"# `{package}`",
            "",
            f"::: {package}",
            "    options:",
            "      members: false",
            "      show_root_heading: false",
            "      show_root_toc_entry: false",
            "",
        ]
        listed = public_names(package)
        own = sorted((e for e in entries if e.home == package), key=lambda e: next(
            (listed.index(n) for p, n in e.exported_by if p == package), len(listed)))
        if own:
            example = own[0].path.rsplit(".", 1)[1]
            lines += [f"Import the names on this page from `{package}` "
                      f"(`from {package} import {example}`).", ""]
        for kind, title in _KINDS:
            group = [e for e in own if e.kind == kind]
            if not group:
                continue
            lines += [f"## {title}", ""]
            for entry in group:
                lines += [f"::: {entry.path}", *_options(entry), ""]
        elsewhere = [e for e in entries if e.home != package
                     and any(p == package for p, _ in e.exported_by)]
        if elsewhere:
            lines += ["## Also exported here", "",
                      f"Documented on their own package's page, importable from `{package}` too:",
                      "", "| name | documented in |", "|---|---|"]
            for entry in elsewhere:
                name = next(n for p, n in entry.exported_by if p == package)
                home = Path(page_path(entry.home)).name  # a sibling page
                lines.append(f"| [`{name}`][{entry.path}] | [`{entry.home}`]({home}) |")
            lines.append("")
        pages[page_path(package)] = "\n".join(lines)
    return pages


def directive_targets(markdown: str) -> list[str]:
    """The identifiers of the ``:::`` directives in a page."""
    return _DIRECTIVE.findall(markdown)


def resolve(identifier: str) -> Any:
    """The object a dotted identifier names, importing the longest module prefix it has."""
    _import_sources()
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {identifier!r}")


def missing_names(pages: dict[str, str], packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The public names (``package.name``) that no ``:::`` directive of ``pages`` documents."""
    documented: set[int] = set()
    for markdown in pages.values():
        for identifier in directive_targets(markdown):
            try:
                documented.add(id(resolve(identifier)))
            except (ImportError, AttributeError):
                continue
    missing = []
    for package in packages:
        module = importlib.import_module(package)
        for name in public_names(package):
            if id(getattr(module, name)) not in documented:
                missing.append(f"{package}.{name}")
    return missing


# --- MkDocs events -------------------------------------------------------------------------------

def home_page() -> str:
    """The site's home page: the README, its links into ``docs/`` pointed at the site's pages."""
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")


def on_files(files: Any, config: Any) -> Any:
    """Add the home page, the reference pages and the notebooks (before mkdocs-jupyter runs)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "index.md", content=home_page()))
    for path, markdown in reference_pages().items():
        files.append(File.generated(config, path, content=markdown))
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(File(f"notebooks/{notebook.name}", src_dir=str(ROOT),
                          dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls))
    return files


on_files.mkdocs_priority = 100  # type: ignore[attr-defined]  # what event_priority(100) sets


"""The documentation site's API reference covers every public name (docs/hooks/reference.py).

The reference pages are generated from the packages' ``__all__``; these tests check the generated
``:::`` directives against the packages themselves, without building the site. The build itself
(``make docs``, marked slow here) is checked through the inventory mkdocstrings writes.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cfrec_docs_reference",
                                                  ROOT / "docs" / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


hook = _load_hook()


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return hook.reference_pages()


def test_documented_packages() -> None:
    assert set(hook.PACKAGES) == {"cfrec", "cfrec.data", "cfrec.models", "cfrec.evaluation",
                                  "cfrec.serve"}


def test_every_public_name_has_a_directive(pages: dict[str, str]) -> None:
    assert hook.missing_names(pages) == []


def test_every_directive_names_an_object(pages: dict[str, str]) -> None:
    dead = []
    for markdown in pages.values():
        for identifier in hook.directive_targets(markdown):
            try:
                hook.resolve(identifier)
            except (ImportError, AttributeError):
                dead.append(identifier)
    assert dead == []


def test_each_object_is_documented_once(pages: dict[str, str]) -> None:
    targets = [t for markdown in pages.values() for t in hook.directive_targets(markdown)]
    objects = [id(hook.resolve(t)) for t in targets]
    assert len(objects) == len(set(objects)), "an object has two ::: directives"


@pytest.mark.parametrize("package", ["cfrec", "cfrec.data", "cfrec.models", "cfrec.evaluation",
                                     "cfrec.serve"])
def test_a_dropped_directive_is_reported(pages: dict[str, str], package: str) -> None:
    """The check can fail: remove the directive of one of the package's names and it is named."""
    module = importlib.import_module(package)
    name = next(n for n in module.__all__ if not n.startswith("__"))
    obj = getattr(module, name)
    trimmed = {}
    for path, markdown in pages.items():
        kept = [line for line in markdown.splitlines()
                if not (hook.directive_targets(line) and hook.resolve(
                    hook.directive_targets(line)[0]) is obj)]
        trimmed[path] = "\n".join(kept)
    assert trimmed != pages
    assert f"{package}.{name}" in hook.missing_names(trimmed)


def test_a_new_public_name_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name added to ``__all__`` joins its package's page with no edit to the docs."""
    import cfrec.evaluation

    def brand_new_helper() -> None:
        """A function the reference has never seen."""

    brand_new_helper.__module__ = "cfrec.evaluation.protocols"
    brand_new_helper.__qualname__ = "brand_new_helper"
    monkeypatch.setattr(cfrec.evaluation.protocols, "brand_new_helper", brand_new_helper,
                        raising=False)
    monkeypatch.setattr(cfrec.evaluation, "brand_new_helper", brand_new_helper, raising=False)
    monkeypatch.setattr(cfrec.evaluation, "__all__",
                        [*cfrec.evaluation.__all__, "brand_new_helper"])
    page = hook.reference_pages()[hook.page_path("cfrec.evaluation")]
    assert "cfrec.evaluation.protocols.brand_new_helper" in hook.directive_targets(page)


def test_every_reference_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for package in hook.PACKAGES:
        assert f"- {hook.page_path(package)}" in nav, package


_FAKE_MODULE = '''"""Uses :func:`helper`, :func:`~cfrec.mod.helper`, :func:`numpy.lexsort` and :func:`gone`."""


def helper(path: str, line: int = 1) -> None:
    """Help.

    Parameters
    ----------
    path, line
        Where.
    """
'''


def test_docstring_references_are_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sphinx roles become links; one naming nothing in the package is a warning (strict: error)."""
    griffe = pytest.importorskip("griffe")
    package = tmp_path / "cfrec"
    package.mkdir()
    (package / "__init__.py").write_text('"""Top."""\n', encoding="utf-8")
    (package / "mod.py").write_text(_FAKE_MODULE, encoding="utf-8")
    extensions = griffe.load_extensions(f"{ROOT / 'docs' / 'hooks' / 'griffe_cfrec.py'}:CfrecDocs")
    with caplog.at_level(logging.WARNING, logger="griffe"):
        loaded = griffe.load("cfrec", search_paths=[str(tmp_path)], extensions=extensions,
                             modules_collection=griffe.ModulesCollection())
    warned = [r.getMessage() for r in caplog.records if "docstring reference" in r.getMessage()]
    assert len(warned) == 1 and ":func:`gone`" in warned[0]
    doc = loaded["mod"].docstring.value
    assert doc.count('identifier="cfrec.mod.helper"') == 2
    assert "<code>numpy.lexsort()</code>" in doc
    params = loaded["mod.helper"].docstring.value
    assert "\npath\n" in params and "\nline\n" in params  # one entry each, own type and default


def test_the_package_has_no_dead_docstring_reference(caplog: pytest.LogCaptureFixture) -> None:
    griffe = pytest.importorskip("griffe")
    extensions = griffe.load_extensions(f"{ROOT / 'docs' / 'hooks' / 'griffe_cfrec.py'}:CfrecDocs")
    with caplog.at_level(logging.WARNING, logger="griffe"):
        griffe.load("cfrec", search_paths=[str(ROOT / "src")], extensions=extensions,
                    modules_collection=griffe.ModulesCollection())
    assert [r.getMessage() for r in caplog.records if "docstring reference" in r.getMessage()] == []


def _inventory(path: Path) -> set[str]:
    """The object names of a Sphinx inventory (objects.inv, version 2), as mkdocstrings writes it."""
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):  # four comment lines, then the zlib stream
        header_end = raw.index(b"\n", header_end) + 1
    lines = zlib.decompress(raw[header_end:]).decode("utf-8").splitlines()
    return {line.split(" ", 1)[0] for line in lines if line.strip()}


@pytest.mark.slow
def test_strict_build_documents_every_public_name(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings_handlers.python")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (the docs extra)")
    site = tmp_path / "site"
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent),
           "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)}
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(site)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = _inventory(site / "objects.inv")
    expected = {t for markdown in hook.reference_pages().values()
                for t in hook.directive_targets(markdown) if t not in hook.PACKAGES}
    assert expected <= names, sorted(expected - names)
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / notebook.stem / "index.html").is_file()

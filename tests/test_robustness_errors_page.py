"""docs/errors.md against the source: every raise site of the engine listed, each with a
test that exists (tests/errors_page.py builds the page; run it after changing a message)."""
import ast
from pathlib import Path

import pytest

import errors_page

TESTS = Path(__file__).resolve().parent
REGENERATE = "run `python tests/errors_page.py --trace` to update docs/errors.md"


def test_every_raise_site_is_listed_with_a_test():
    listed = errors_page.read_page()
    sites = {site.key: site for site in errors_page.raise_sites()}
    missing = [f"{s.path}:{s.first_line} {s.where}: {s.error}({s.message[:60]!r})" for key, s in sites.items()
               if key not in listed]
    assert not missing, f"raise sites not in docs/errors.md ({REGENERATE}):\n" + "\n".join(missing)
    untested = [f"{path} {where}: {error}({message[:60]!r})" for (path, where, error, message), test
                in listed.items() if test is None and (path, where, error, message) in sites]
    assert not untested, "docs/errors.md entries without a test (write one, then --trace):\n" + "\n".join(untested)
    stale = [key for key in listed if key not in sites]
    assert not stale, f"docs/errors.md lists messages the source no longer raises ({REGENERATE}): {stale}"


def _test_functions(path):
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_named_test_exists():
    named = {test for test in errors_page.read_page().values() if test}
    assert named
    for test in sorted(named):
        file, _, function = test.partition("::")
        path = TESTS.parent / file
        assert path.is_file(), f"docs/errors.md names {test}, but {file} does not exist"
        name = function.split("::")[-1]  # Class::test_method
        assert name in _test_functions(path), f"docs/errors.md names {test}, which {file} does not define"


@pytest.mark.parametrize("source, expected", [
    ('raise ValueError(f"x must be {a!r}; got {b.shape}")', ("f", "ValueError", "x must be {a!r}; got {b.shape}")),
    ('raise TypeError("plain " "words")', ("f", "TypeError", "plain words")),
    ('def g():\n    raise foreign(f"its {n} is bad")', ("g", "foreign", "its {n} is bad")),
    ('raise _bad_file(path, "model", f"why {x}")', ("f", "_bad_file", "why {x}")),
])
def test_sites_are_read_from_the_source(source, expected):
    """The page's key for a raise: function, callee and message, fields kept as written."""
    tree = ast.parse("def f():\n" + "\n".join("    " + line for line in source.splitlines()))
    (site,) = errors_page._sites_in(tree, "engine/x.py")
    assert (site.where.split(".")[-1], site.error, site.message) == expected

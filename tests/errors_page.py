"""docs/errors.md: every exception the engine package raises with a message, and a test
that triggers it.

The raise sites are read from the source (``raise SomeError(...)``; bare re-raises and
``raise <variable>`` of a caught error are not new messages, and ``NotImplementedError``
of an abstract method is none a user can meet). Each is listed once per (module,
function, exception, message); tests/test_robustness_errors_page.py checks that the page
lists every site and that every test it names exists.

Regenerate the page (keeping the tests already named) with::

    python tests/errors_page.py            # rewrite docs/errors.md from the source
    python tests/errors_page.py --trace    # also run the suite, tracing which test raises what

``--trace`` runs pytest with this file as a plugin: a trace function on the engine's own
frames records, for each exception raised there, the raise line and the running test.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "errors.md"
SOURCES = ("engine/*.py", "engine/bench/*.py")
TRACE_FILE_ENV = "FUSEDENSE_ERRORS_TRACE"
# NotImplementedError: abstract methods; AssertionError and its KernelMismatch: the
# benchmark's self-checks, which fire only when a backend computes wrong values.
NOT_LISTED = ("NotImplementedError", "AssertionError", "KernelMismatch")


@dataclass(frozen=True)
class Site:
    path: str  # relative to the repository, e.g. engine/model.py
    where: str  # the enclosing function's qualified name, "<module>" at the top
    error: str  # the exception expression's callee, e.g. ValueError or foreign
    message: str  # the message as written, {expressions} left in
    first_line: int
    last_line: int

    @property
    def key(self):
        return self.path, self.where, self.error, self.message


def _is_exception_class(name):
    return name.endswith(("Error", "Exception", "Unavailable", "Exit", "Mismatch"))


def _message(call):
    """The message argument as the text a reader recognises, f-string fields kept as
    {expr}: an exception's first argument, a helper's last (``_bad_file(path, kind, why)``)."""
    if not call.args:
        return ""
    node = call.args[0] if _is_exception_class(ast.unparse(call.func)) else call.args[-1]
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                conversion = "" if value.conversion == -1 else "!" + chr(value.conversion)
                spec = "" if value.format_spec is None else ":" + _message(
                    ast.Call(func=call.func, args=[value.format_spec], keywords=[]))
                parts.append("{" + ast.unparse(value.value) + conversion + spec + "}")
        text = "".join(parts)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.BinOp):  # "..." + f"..." over lines
        text = "".join(_message(ast.Call(func=call.func, args=[side], keywords=[]))
                       for side in (node.left, node.right))
    else:
        text = "{" + ast.unparse(node) + "}"
    return " ".join(text.split())


def raise_sites(root=ROOT):
    """Every ``raise Callee(...)`` in the engine sources, in file and line order."""
    sites = []
    for pattern in SOURCES:
        for file in sorted(root.glob(pattern)):
            tree = ast.parse(file.read_text(), str(file))
            sites.extend(_sites_in(tree, file.relative_to(root).as_posix()))
    return sites


def _sites_in(tree, path):
    found = []

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, scope + [child.name])
                continue
            if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call):
                error = ast.unparse(child.exc.func)
                if error not in NOT_LISTED:
                    found.append(Site(path, ".".join(scope) or "<module>", error, _message(child.exc),
                                      child.lineno, child.end_lineno))
            visit(child, scope)

    visit(tree, [])
    return found


# ------------------------------------------------------------------ the page
def _code(text):
    """A Markdown code span of ``text`` that survives a table cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _row(site, test):
    return f"| {_code(site.where)} | {_code(site.error)} | {_code(site.message)} | {_code(test) if test else '(none yet)'} |"


_ROW = re.compile(r"^\| (?P<where>`.*?`) \| (?P<error>`.*?`) \| (?P<message>``? ?.*? ?``?) \| (?P<test>.*) \|$")


def _uncode(cell):
    cell = cell.strip()
    fence = "``" if cell.startswith("``") else "`"
    inner = cell[len(fence):-len(fence)]
    if fence == "``":
        inner = inner[1:-1]
    return inner.replace("\\|", "|")


def read_page(page=PAGE):
    """{site key: test (or None)} of the rows docs/errors.md lists."""
    listed, path = {}, None
    if not page.exists():
        return listed
    for line in page.read_text().splitlines():
        if line.startswith("## "):
            path = line[3:].strip().strip("`")
            continue
        match = _ROW.match(line)
        if match and path and match["where"] != "`Raised in`":
            test = match["test"].strip()
            listed[(path, _uncode(match["where"]), _uncode(match["error"]), _uncode(match["message"]))] = \
                None if test == "(none yet)" else _uncode(test)
    return listed


HEADER = """# Error messages

Every exception the `engine` package raises with a message of its own, module by module:
where it is raised, the exception, the message as written in the source (`{...}` are the
values filled in), and a test that triggers it. Bad input to the public API is a
`ValueError` (wrong values, shapes, names) or a `TypeError` (wrong types) naming the
argument; a loss or gradient that becomes NaN or Inf during training is an
`engine.NonFiniteError` (a `FloatingPointError`); a backend that cannot run here is an
`engine.BackendUnavailable` (a `RuntimeError`). Nothing is half-updated when one is raised:
weights, optimizer state and the step count are those of before the call.

Callees other than a built-in exception (such as `foreign` in `engine/io.py`) are helpers
that build the exception: the table names the helper and its argument. Re-raises of an
error caught elsewhere are not listed (their message is the original's), nor the
`NotImplementedError` of abstract methods.

The page is checked against the source by `tests/test_robustness_errors_page.py` (every
raise site listed, every named test present); `python tests/errors_page.py` rewrites it
after a change, keeping the tests already named, and `python tests/errors_page.py --trace`
finds a test for each new site by running the suite.
"""


def write_page(sites, tests, page=PAGE):
    lines = [HEADER]
    by_path = {}
    for site in sites:
        by_path.setdefault(site.path, {}).setdefault(site.key, site)
    for path, unique in by_path.items():
        lines += [f"## {path}", "", "| Raised in | Error | Message | Test |", "| --- | --- | --- | --- |"]
        lines += [_row(site, tests.get(key)) for key, site in unique.items()]
        lines.append("")
    page.write_text("\n".join(lines))


# ----------------------------------------------------------------- tracing
_ENGINE = str(ROOT / "engine") + os.sep
_raised = {}  # (path, line) -> first test
_current_test = [None]


def _local_trace(frame, event, arg):
    if event == "exception" and arg[2] is not None and arg[2].tb_next is None and _current_test[0]:
        path = os.path.relpath(frame.f_code.co_filename, ROOT).replace(os.sep, "/")
        _raised.setdefault(f"{path}:{frame.f_lineno}", _current_test[0])
    return _local_trace


def _global_trace(frame, event, arg):
    if frame.f_code.co_filename.startswith(_ENGINE):
        frame.f_trace_lines = False
        return _local_trace
    return None


def pytest_runtest_setup(item):
    _current_test[0] = item.nodeid


def pytest_sessionstart(session):
    sys.settrace(_global_trace)
    threading.settrace(_global_trace)


def pytest_sessionfinish(session):
    sys.settrace(None)
    target = os.environ.get(TRACE_FILE_ENV)
    if target:
        Path(target).write_text(json.dumps(_raised, indent=0))


def _trace_suite(trace_file, pytest_args):
    env = dict(os.environ, **{TRACE_FILE_ENV: str(trace_file)},
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "errors_page", "-p", "no:cacheprovider",
                    *pytest_args], cwd=ROOT, env=env, check=False)
    return json.loads(Path(trace_file).read_text())


def _test_for(site, raised):
    for line in range(site.first_line, site.last_line + 1):
        nodeid = raised.get(f"{site.path}:{line}")
        if nodeid:
            return nodeid.split("[")[0]  # the test function, whatever its parameters
    return None


def main(argv):
    sites = raise_sites()
    tests = {key: test for key, test in read_page().items() if test}
    if "--trace" in argv:
        extra = [a for a in argv if a != "--trace"]
        with tempfile.TemporaryDirectory() as folder:
            raised = _trace_suite(Path(folder) / "raised.json", extra)
        for site in sites:
            if site.key not in tests:
                found = _test_for(site, raised)
                if found:
                    tests[site.key] = found
    write_page(sites, tests)
    missing = sum(1 for site in {s.key for s in sites} if site not in tests)
    print(f"{PAGE.relative_to(ROOT)}: {len({s.key for s in sites})} raise sites, {missing} without a test")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The house rules, checked: short functions and modules, imports that point one way along
the data flow, and a README that opens with its two commands and stays short."""

import ast
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aevae_jax"
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 500
MAX_README_LINES, COMMANDS_WITHIN = 250, 40
# The rooms in the order data flows through them; a module may import from its own room
# and the rooms before it. Top-level modules (configuration, errors, progress bars and the
# writers) serve every room.
ROOMS = ("", "data", "nn", "models", "evaluate", "train", "study", "cli")


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def room(module_path: pathlib.Path) -> str:
    parts = module_path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def test_no_function_over_60_lines_and_no_module_over_500():
    long_functions, long_modules = [], []
    for path in modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def imported_rooms(path: pathlib.Path):
    """(line, room) of every aevae_jax import in a module, top-level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "aevae_jax" and len(parts) > 1 and parts[1] in ROOMS:
                yield node.lineno, parts[1]
                break


def test_imports_point_one_way_along_the_data_flow():
    backwards = []
    for path in modules():
        if path.parent == PACKAGE:
            continue  # aevae_jax/__init__ and __main__ gather the public API
        own = ROOMS.index(room(path))
        for line, other in imported_rooms(path):
            if ROOMS.index(other) > own:
                backwards.append(f"{path.relative_to(ROOT)}:{line} imports {other}/")
    assert not backwards, backwards


def test_the_checker_sees_a_backward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from aevae_jax.cli.main import main\n")
    assert list(imported_rooms(bad)) == [(2, "cli")]


def readme_lines():
    return (ROOT / "README.md").read_text().splitlines()


def test_readme_is_short_and_opens_with_its_two_commands():
    lines = readme_lines()
    assert len(lines) <= MAX_README_LINES, len(lines)
    head = "\n".join(lines[:COMMANDS_WITHIN])
    assert re.search(r"bash install\.sh && \.venv/bin/aevae compare", head)  # the main job
    assert re.search(r"\.venv/bin/python -m pytest", head)


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), target


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_links_resolve(page):
    text = (ROOT / "docs" / page).read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert os.path.exists(ROOT / "docs" / target), f"{page}: {target}"

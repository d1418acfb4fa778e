"""core/ does no I/O and reads no clock or randomness: it imports none of
the modules that would let it."""

from __future__ import annotations

import ast
import pathlib

import mcp_oauth_proxy.core as core

FORBIDDEN = {
    "socket", "ssl", "select", "selectors", "asyncio", "trio", "anyio", "sqlalchemy", "httpx", "h11",
    "requests", "urllib3", "time", "datetime", "secrets", "random", "os", "sys", "io", "pathlib",
    "threading", "subprocess", "multiprocessing", "logging", "uuid", "http", "starlette", "hypercorn",
    "uvicorn", "flask", "django", "werkzeug", "psycopg", "pymysql", "sqlite3", "cryptography", "shutil",
}
FORBIDDEN_EXACT = {"urllib.request", "http.client", "http.server"}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append((node.lineno, "__import__"))
    return found


def offending(root: pathlib.Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        for lineno, module in _imports(ast.parse(path.read_text())):
            if module == "__import__" or module.split(".")[0] in FORBIDDEN or module in FORBIDDEN_EXACT:
                bad.append(f"{path.relative_to(root)}:{lineno} imports {module}")
    return bad


def test_core_imports_no_io_clock_or_randomness():
    assert offending(pathlib.Path(core.__file__).parent) == []


def test_the_check_catches_an_offender(tmp_path):
    (tmp_path / "leaky.py").write_text("import time\nfrom sqlalchemy import text\nimport urllib.request\n")
    assert offending(tmp_path) == [
        "leaky.py:1 imports time", "leaky.py:2 imports sqlalchemy", "leaky.py:3 imports urllib.request",
    ]

"""`vcam.model` is the algorithm only: it imports nothing from the app except `vcam.errors` and `vcam.frame`."""

from __future__ import annotations

import ast
from pathlib import Path

MODEL_FOLDER = Path(__file__).resolve().parent.parent / "model"
#: the app modules the model may use: its error types and the frame check
ALLOWED_APP_MODULES = {"vcam.errors", "vcam.frame"}


def _imported_modules(path: Path) -> list[str]:
    """Every module an `import` or `from ... import` in `path` names, at any depth (lazy imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules.append(node.module)
    return modules


def app_imports(path: Path) -> list[str]:
    """The `vcam.*` modules outside `vcam.model` that `path` imports, less the allowed ones."""
    return [
        module
        for module in _imported_modules(path)
        if (module == "vcam" or module.startswith("vcam."))
        and not (module == "vcam.model" or module.startswith("vcam.model."))
        and module not in ALLOWED_APP_MODULES
    ]


def test_the_model_imports_nothing_from_the_app() -> None:
    sources = sorted(MODEL_FOLDER.glob("*.py"))
    assert len(sources) > 10  # the scan found the model's files
    offenders = {path.name: app_imports(path) for path in sources if app_imports(path)}
    assert offenders == {}


def test_the_scan_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from vcam.errors import ConfigError\n"
        "import vcam.model.unet\n"
        "if TYPE_CHECKING:\n"
        "    from vcam.config import Config\n"
        "def load():\n"
        "    import vcam.weights\n"
        "    from vcam.model.pool import ModelPool\n",
        encoding="utf-8",
    )
    assert app_imports(source) == ["vcam.config", "vcam.weights"]

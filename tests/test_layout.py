"""The folders show the roles (docs/architecture.md, "Packages"): the nightly stages never import evaluation or the
data sources, and the models never import the pipeline. Read from the source's imports, not from a list."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"pipelines/cli.py"}  # the CLI offers every command, evaluation and sources included


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in files:
        bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
        if bad:
            out[str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name] = bad
    return out


def test_nightly_stages_and_dags_do_not_import_evaluation_or_sources():
    files = [p for p in sorted((ROOT / "pipelines").rglob("*.py"))
             if not p.relative_to(ROOT / "pipelines").parts[0] in ("evaluation", "sources")
             and str(p.relative_to(ROOT)) not in ENTRY_POINTS]
    files += sorted((ROOT / "dags").glob("*.py"))
    assert len(files) > 30
    assert offenders(files, ("pipelines.evaluation", "pipelines.sources")) == {}


def test_models_do_not_import_the_pipeline():
    files = sorted((ROOT / "models").rglob("*.py"))
    assert files
    assert offenders(files, ("pipelines",)) == {}


def test_the_check_sees_an_offending_import(tmp_path):
    bad = tmp_path / "stage.py"
    bad.write_text("from pipelines.evaluation import bench\nimport pipelines.sources.simulate\n", encoding="utf-8")
    assert offenders([bad], ("pipelines.evaluation", "pipelines.sources")) == {
        "stage.py": ["pipelines.evaluation", "pipelines.evaluation.bench", "pipelines.sources.simulate"]}

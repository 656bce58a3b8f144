"""The README is the front door: its commands and figures must stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_block = next(block for block in blocks if "run the tests" in block)
    command = [line for line in test_block.splitlines() if line and not line.startswith("#")]
    assert len(command) == 1
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command[0] in ci_lines


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_python_examples_run_and_print_their_comments(index, tmp_path, monkeypatch, capsys):
    """Each README python block runs; a `print(...)  # 1 2 3` comment of integers is its exact output line."""
    code = re.findall(r"```python\n(.*?)```", README, flags=re.S)[index]
    expected = [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# (\d[\d ]*\d)(?:\s+\(.*\))?$", code, flags=re.M)]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert expected and all(line in printed for line in expected), (expected, printed)

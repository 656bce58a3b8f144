"""The README is the front door: its commands and figures must stay true."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_python_quick_start_runs_and_prints_its_comment(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    expected = re.search(r"print\(result.params, result.flops\)\s+# (\d+) (\d+)", code).groups()
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == list(expected)
    assert (tmp_path / "arch.yaml").exists()

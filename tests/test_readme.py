"""The README is the front door: its commands and figures must stay true."""

from __future__ import annotations

import re
import shlex
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


def _command_lines() -> list[str]:
    """Every `bsnas ...` command of the README's code blocks, continuation lines joined (usage synopses with
    [optional] or a|b parts left out)."""
    lines = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S):
        if language not in ("", "bash"):
            continue
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"\s(?:&&|;)\s", line):
                part = part.strip()
                unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", part)
                if part.startswith(("bsnas ", ".venv/bin/bsnas ")) and not re.search(r"[\[\]|…]|\.\.\.", unquoted):
                    lines.append(part)
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_readme_commands_parse(line):
    """A README command uses flags and choices the CLI has (parsing only; nothing runs)."""
    from bsnas.cli import build_parser

    argv = shlex.split(line)[1:]
    build_parser().parse_args(argv)


def test_presets_in_readme_and_help_come_from_the_config(capsys):
    from bsnas.cli import main
    from bsnas.train.config import PRESETS, describe_preset

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in PRESETS:
        assert " ".join(describe_preset(name).split()) in help_text
        row = next(line for line in README.splitlines() if line.startswith(f"| `{name}`"))
        assert describe_preset(name) in row, (name, describe_preset(name))

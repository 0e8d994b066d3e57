"""Every documented command parses: the guides, the README and the Colab notebook stay runnable.

Collects each shell command from the fenced ```bash blocks of ``DOCS`` and each ``python``/``!python``
line of the notebook's code cells that invokes a launch script (``launch/*.py``,
``launch/tpu_pod.sh``, ``launch/slurm_gpu.sbatch``) or a console script (any of pyproject.toml's
``[project.scripts]``; ``hourllava-train`` is checked as ``launch/train.py``), and checks it
without running anything heavy:

* ``launch/train.py`` (also reached through ``tpu_pod.sh``'s ``CONFIG``/``WORKDIR`` and
  ``slurm_gpu.sbatch``'s two positional arguments): ``parse_args`` of the script, then
  ``load_train_config(config, overrides)``, ``data.check_sources()`` and the model preset with
  its ``model_overrides`` (``load_model_config``), i.e. everything the launcher checks before
  building a model. A config written as ``...`` (an elided value) is parsed but not loaded.
* other launch scripts: the script's own ``parse_args`` (or that of the module its ``main`` comes
  from, e.g. ``hourllava_jax.infer.cli`` for ``answer.py``) on the documented arguments.
* ``hourllava-convert`` builds its parser inside ``main``: ``main(argv)`` runs with
  ``ArgumentParser.parse_args`` intercepted right after parsing, so nothing is converted.
* a script with neither falls back to ``--help`` in a subprocess (timeout).

Placeholder paths are fine (nothing is opened). A shell variable standing alone as an argument
(``$i``, ``${N}``) is replaced by ``0``. Also ``bash -n`` of the two shell launchers and the
notebook's nbformat-4 structure. No training, no compilation: a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/tpu.md", "docs/gpu.md", "docs/training.md", "docs/data_pipeline.md", "README.md")
NOTEBOOK = "notebooks/quickstart.ipynb"
# Console script -> the module of its main(), as pyproject.toml installs them.
CONSOLE_SCRIPTS = {name: target.partition(":")[0] for name, target in
                   tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].items()}
SHELL_LAUNCHERS = ("launch/tpu_pod.sh", "launch/slurm_gpu.sbatch")
_SCRIPT_RE = re.compile(r"(?:^|/)(launch/[\w.-]+\.(?:py|sh|sbatch))$")
_SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")"}
_VAR_RE = re.compile(r"^\$(\w+|\{\w+\})$")
_ASSIGN_RE = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.S)


@dataclass
class Command:
    source: str  # "docs/tpu.md:42"
    script: str  # "launch/train.py" or a console script name
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{self.source}: {env + ' ' if env else ''}{self.script} {shlex.join(self.args)}"


# ==================================================================================================
# Extraction
# ==================================================================================================


def bash_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of every fenced ```bash block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```sh", "```shell"):
            start, body = i + 2, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((start, "\n".join(body)))
        i += 1
    return blocks


def logical_lines(first_line: int, body: str) -> list[tuple[int, str]]:
    """Joins backslash-continued lines; (line number, text)."""
    out, buf, start = [], "", first_line
    for n, line in enumerate(body.splitlines(), first_line):
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _tokens(line: str) -> list[str]:
    line = re.sub(r"(?<=\s)\d+(?=[<>])", "", line)  # "2>&1" -> ">&1": the fd is not an argument
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def _script_of(token: str) -> str | None:
    if token in CONSOLE_SCRIPTS:
        return token
    m = _SCRIPT_RE.search(token)
    return m.group(1) if m else None


def commands_in_line(line: str, source: str, env: dict[str, str]) -> list[Command]:
    """The project commands of one shell line. ``env`` holds the block's standalone assignments
    (``export A=b`` / ``A=b``) so far and is updated with this line's."""
    found: list[Command] = []
    simple: list[list[str]] = [[]]
    for tok in _tokens(line):
        if tok in _SEPARATORS:
            simple.append([])
        else:
            simple[-1].append(tok)
    for toks in simple:
        toks = toks[1:] if toks[:1] == ["export"] else toks
        n_assign = next((i for i, t in enumerate(toks) if not _ASSIGN_RE.match(t)), len(toks))
        prefix_env = dict(_ASSIGN_RE.match(t).groups() for t in toks[:n_assign])
        if n_assign == len(toks):  # only assignments: visible to the later lines of the block
            env.update(prefix_env)
            continue
        for i, tok in enumerate(toks[n_assign:], n_assign):
            script = _script_of(tok)
            if script is not None:
                args = []
                for a in toks[i + 1:]:
                    if re.fullmatch(r"\d*[<>]+&?\d*|&", a):  # a redirection: the rest is not arguments
                        break
                    args.append(a)
                found.append(Command(source, script, args, {**env, **prefix_env}))
                break
            if " " in tok:  # a command string, e.g. ssh --command="cd r && python launch/x.py ..."
                inner = tok.split("=", 1)[1] if tok.startswith("-") and "=" in tok else tok
                found += commands_in_line(inner, source, dict(env))
    return found


def doc_commands(path: str) -> list[Command]:
    text = (ROOT / path).read_text()
    cmds: list[Command] = []
    for first, body in bash_blocks(text):
        env: dict[str, str] = {}
        for n, line in logical_lines(first, body):
            cmds += commands_in_line(line, f"{path}:{n}", env)
    return cmds


def notebook_commands(path: str = NOTEBOOK) -> list[Command]:
    nb = json.loads((ROOT / path).read_text())
    cmds: list[Command] = []
    for c, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        for n, line in logical_lines(1, src):
            s = line.strip().lstrip("!").strip()
            if re.match(r"^(python3?|\S*/python3?|hourllava-\w+)\b", s):
                cmds += commands_in_line(s, f"{path}:cell{c}:{n}", {})
    return cmds


def _all_commands() -> list[Command]:
    cmds = [c for d in DOCS for c in doc_commands(d)]
    if (ROOT / NOTEBOOK).is_file():
        cmds += notebook_commands()
    return cmds


ALL = _all_commands()


# ==================================================================================================
# Checking
# ==================================================================================================


class _Parsed(Exception):
    def __init__(self, ns: argparse.Namespace):
        self.ns = ns


def _load_script(script: str) -> ModuleType:
    name = "_guide_" + re.sub(r"\W", "_", script)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # the scripts guard main() with __name__ == "__main__"
    return mod


def _resolve_vars(args: list[str]) -> list[str]:
    return ["0" if _VAR_RE.match(a) else a for a in args]


def _parse(parse, argv: list[str], what: str):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parse(argv)
    except SystemExit as e:
        if e.code in (0, None):
            return None
        pytest.fail(f"{what}: argument parsing failed: {err.getvalue().strip()}")


def check_train(argv: list[str], what: str) -> None:
    from hourllava_jax.config import load_model_config
    from hourllava_jax.config.base import ConfigError
    from hourllava_jax.train.config import load_train_config

    from hourllava_jax.cli.train import parse_args  # launch/train.py is a wrapper over its main

    args = _parse(parse_args, argv, what)
    if args is None or args.config == "...":
        return
    try:
        cfg = load_train_config(args.config, args.overrides)
        cfg.data.check_sources()
        if cfg.model != "standin":
            load_model_config(cfg.model, list(cfg.model_overrides))
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as e:
        pytest.fail(f"{what}: config {args.config!r} with overrides {args.overrides}: {type(e).__name__}: {e}")


def _parse_intercepted(main, argv: list[str], what: str, monkeypatch) -> None:
    """Runs ``main(argv)`` but stops right after its parser has parsed ``argv``."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        ns = original(self, args, namespace)
        raise _Parsed(ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        _parse(main, argv, what)
    except _Parsed:
        return
    finally:
        monkeypatch.undo()
    pytest.fail(f"{what}: main() returned without parsing its arguments")


def check_python_script(module: ModuleType, argv: list[str], what: str, monkeypatch, script_path: Path | None) -> None:
    parse = getattr(module, "parse_args", None)
    if parse is None and hasattr(module, "main"):
        parse = getattr(importlib.import_module(module.main.__module__), "parse_args", None)
    if parse is not None:
        _parse(parse, argv, what)
    elif hasattr(module, "main"):
        _parse_intercepted(module.main, argv, what, monkeypatch)
    else:  # no importable parser: the script's own --help
        assert script_path is not None, what
        r = subprocess.run([sys.executable, str(script_path), "--help"], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert r.returncode == 0, f"{what}: --help failed: {r.stderr[-2000:]}"


def check_command(cmd: Command, monkeypatch) -> None:
    what = str(cmd)
    args = _resolve_vars(cmd.args)
    if cmd.script == "hourllava-train":
        check_train(args, what)
        return
    if cmd.script in CONSOLE_SCRIPTS:
        check_python_script(importlib.import_module(CONSOLE_SCRIPTS[cmd.script]), args, what, monkeypatch, None)
        return
    path = ROOT / cmd.script
    assert path.is_file(), f"{what}: {cmd.script} does not exist"
    if cmd.script == "launch/train.py":
        check_train(args, what)
    elif cmd.script == "launch/tpu_pod.sh":
        missing = [k for k in ("TPU_NAME", "ZONE", "CONFIG", "WORKDIR") if k not in cmd.env]
        assert not missing, f"{what}: tpu_pod.sh needs {missing} in the environment"
        check_train(["--config", cmd.env["CONFIG"], "--workdir", cmd.env["WORKDIR"], *args], what)
    elif cmd.script == "launch/slurm_gpu.sbatch":
        assert len(args) >= 2, f"{what}: slurm_gpu.sbatch needs CONFIG WORKDIR [--set k=v ...]"
        check_train(["--config", args[0], "--workdir", args[1], *args[2:]], what)
    elif path.suffix == ".py":
        check_python_script(_load_script(cmd.script), args, what, monkeypatch, path)
    else:
        pytest.fail(f"{what}: no check for {cmd.script}")


# ==================================================================================================
# Tests
# ==================================================================================================


@pytest.mark.parametrize("cmd", ALL, ids=[c.source for c in ALL])
def test_documented_command_parses(cmd: Command, monkeypatch):
    check_command(cmd, monkeypatch)


@pytest.mark.parametrize("doc", DOCS)
def test_doc_has_commands(doc):
    """Guards the extraction itself: each page documents at least one project command."""
    assert doc_commands(doc), f"{doc}: no launch-script command found in its ```bash blocks"


@pytest.mark.parametrize("script", SHELL_LAUNCHERS)
def test_shell_launcher_syntax(script):
    r = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_notebook_is_nbformat4_and_runs_the_demo_and_answer():
    nb = json.loads((ROOT / NOTEBOOK).read_text())
    assert nb["nbformat"] == 4 and "metadata" in nb and isinstance(nb["cells"], list)
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("code", "markdown") and isinstance(cell["source"], list)
        assert "metadata" in cell
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell
    scripts = [c.script for c in notebook_commands()]
    assert "launch/demo.py" in scripts and "launch/answer.py" in scripts, scripts
    demo = [c for c in notebook_commands() if c.script == "launch/demo.py"]
    assert all("--quick" in c.args for c in demo)


def test_extraction_handles_the_shell_forms():
    """Continuations, env prefixes, chains, comments, redirections, ssh --command strings, exports."""
    body = ("export CONFIG=configs/train/tiny.yaml\n"
            "A=1 python launch/x.py --a 1 \\\n  --b 2 2>&1 | tee log   # comment\n"
            "cd repo && .venv/bin/python launch/y.py --c && echo done\n"
            "gcloud ssh tpu --command=\"cd r && python launch/z.py --d $i\" &\n"
            "WORKDIR=/w launch/tpu_pod.sh --set a=1\n")
    env: dict[str, str] = {}
    got = [c for n, line in logical_lines(1, body) for c in commands_in_line(line, f"t:{n}", env)]
    assert [(c.script, c.args) for c in got] == [
        ("launch/x.py", ["--a", "1", "--b", "2"]), ("launch/y.py", ["--c"]), ("launch/z.py", ["--d", "$i"]),
        ("launch/tpu_pod.sh", ["--set", "a=1"])]
    assert got[0].env == {"CONFIG": "configs/train/tiny.yaml", "A": "1"}
    assert got[3].env == {"CONFIG": "configs/train/tiny.yaml", "WORKDIR": "/w"}
    assert _resolve_vars(got[2].args) == ["--d", "0"]


def test_bad_commands_are_caught(monkeypatch):
    """The checks fail on a wrong flag, a missing preset, an unknown override key."""
    for argv in (["--config", "configs/train/tiny.yaml", "--workdir", "w", "--bogus"],
                 ["--config", "configs/train/nope.yaml", "--workdir", "w"],
                 ["--config", "configs/train/tiny.yaml", "--workdir", "w", "--set", "steps=5"],
                 ["--config", "configs/train/tiny.yaml", "--workdir", "w", "--set", "model_overrides=[nope=1]"]):
        with pytest.raises(pytest.fail.Exception):
            check_train(argv, "bad")
    with pytest.raises(pytest.fail.Exception):
        check_command(Command("t", "hourllava-convert", ["compose", "--vision", "v"]), monkeypatch)
    with pytest.raises(pytest.fail.Exception):
        check_command(Command("t", "launch/answer.py", ["--video", "v.mp4", "--question", "q"]), monkeypatch)

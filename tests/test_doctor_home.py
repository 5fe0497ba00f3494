"""`agentspan doctor` fails its store check for a home (or store file) no run could write to."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentspan import config
from agentspan.cli import app
from agentspan.stores.sqlite import SqliteStore

runner = CliRunner()
AGENTSPAN = Path(sys.executable).parent / "agentspan"
NOBODY = 65534


@pytest.fixture(autouse=True)
def home(cli_home: Path) -> Path:
    """An empty AGENTSPAN_HOME, fresh settings, no server."""
    return cli_home


def _doctor(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("AGENTSPAN_HOME", str(home))
    config.reset()
    result = runner.invoke(app, ["doctor", "--json"])
    config.reset()
    return result.exit_code, json.loads(result.stdout)["store"]


def test_a_home_under_a_file_fails_the_check(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(was: "not created yet", exit 0; the demo and every run failed there, root included)"""
    (home / "a-file").write_text("x")
    bad = home / "a-file" / "agentspan"
    code, store = _doctor(bad, monkeypatch)
    assert code == 1
    assert store == f"error: cannot use the Agentspan home {bad} (AGENTSPAN_HOME): Not a directory"
    table = runner.invoke(app, ["doctor"])
    assert table.exit_code == 1 and "Not a directory" in table.stdout


def test_a_home_not_made_yet_passes_and_is_left_as_it_was(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = home / "not" / "made" / "yet"
    code, store = _doctor(fresh, monkeypatch)
    assert (code, store) == (0, "not created yet")
    assert list(home.iterdir()) == []  # the check's folders and probe file are removed again


def test_an_existing_store_in_a_usable_home_passes(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteStore(home / "agentspan.db").close()
    before = sorted(p.name for p in home.iterdir())
    assert _doctor(home, monkeypatch) == (0, "ok")
    assert sorted(p.name for p in home.iterdir()) == before


def test_a_failed_write_fails_the_check_whatever_the_permission_bits(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount refuses root too, with permission bits that allow writing."""

    def read_only_mount(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only_mount)
    code, store = _doctor(home, monkeypatch)
    assert code == 1
    assert store == f"error: cannot use the Agentspan home {home} (AGENTSPAN_HOME): Read-only file system"


def _can_run_as_nobody() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None and os.name == "posix"


def _as_user(home: Path) -> subprocess.CompletedProcess[str]:
    """``agentspan doctor --json`` as an unprivileged user when the tests run as root."""
    env = {**os.environ, "AGENTSPAN_HOME": str(home), "HOME": str(home.parent)}
    env.pop("AGENTSPAN_SERVER_URL", None)
    prefix = (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
              if os.geteuid() == 0 else [])  # fmt: skip
    return subprocess.run([*prefix, str(AGENTSPAN), "doctor", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is root's alone)."""
    if os.geteuid() == 0 and not _can_run_as_nobody():
        pytest.skip("root without setpriv: permission bits do not stop root")
    folder = Path(tempfile.mkdtemp(prefix="agentspan-doctor-"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder)


def test_a_read_only_home_fails_the_check(shared_dir: Path) -> None:
    """(was: "not created yet", exit 0, for a home of mode 0o555)"""
    home = shared_dir / "home"
    home.mkdir(mode=0o555)
    home.chmod(0o555)
    out = _as_user(home)
    assert out.returncode == 1, out.stdout + out.stderr
    store = json.loads(out.stdout)["store"]
    assert store == f"error: cannot use the Agentspan home {home} (AGENTSPAN_HOME): Permission denied"


def test_a_read_only_store_file_fails_the_check(shared_dir: Path) -> None:
    """(was: "ok", exit 0: the store opened read-only and every write then failed)"""
    home = shared_dir / "home"
    home.mkdir()
    home.chmod(0o777)
    SqliteStore(home / "agentspan.db").close()
    for path in home.iterdir():
        path.chmod(0o444 if path.is_file() else 0o777)
    out = _as_user(home)
    assert out.returncode == 1, out.stdout + out.stderr
    store = json.loads(out.stdout)["store"]
    assert store == f"error: cannot write the Agentspan store file {home / 'agentspan.db'}: Permission denied"

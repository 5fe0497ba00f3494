"""What the tests of keyset paging (`test_run_paging`, `test_approval_paging`) share: an id that
needs URL and HTML escaping, the web UI pager's links, and the CLI run in-process."""

from __future__ import annotations

import html
import re

from typer.testing import CliRunner

from agentspan.cli import app as cli_app

NASTY = 'z"><b>&amp;?before=x#/ y'
"""A custom id needing both URL and HTML escaping (it sorts after UUIDv7 ids: newest)."""
_HREF = re.compile(r'<a href="([^"]*)" rel="(first|next)">')
_runner = CliRunner()


def links(page: str) -> dict[str, str]:
    """The pager's links of a listing page: ``first`` (Newest) and ``next`` (Older) to their URL."""
    return {rel: html.unescape(href) for href, rel in _HREF.findall(page)}


def cli(*args: str) -> str:
    """``agentspan ARGS`` in this process; its standard output (it must succeed)."""
    result = _runner.invoke(cli_app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout

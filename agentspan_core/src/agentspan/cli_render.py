"""Rich rendering and JSON shaping for the `agentspan` CLI (see `agentspan.cli`).

Every value read from a store is wrapped in `rich.text.Text`, never interpolated into markup, so
agent names, tool arguments or outputs containing ``[brackets]`` print verbatim; and its control
characters are shown as escapes (`printable`): a run's input is often an end user's message, and
an escape sequence in it must not clear, retitle or hide the operator's terminal.
"""

import json
import shlex
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agentspan.approvals import effective_status
from agentspan.divergence import SUPERSEDED
from agentspan.jsontext import utf8_text
from agentspan.records import JSON, Approval, Run, Step, StepKind, StepStatus, now
from agentspan.stores.reopening import retries_of

_BIDI = frozenset({0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)})
"""Bidirectional formatting characters (marks, embeddings, overrides, isolates): text that holds
them shows on a terminal in another order than it reads (a name that looks like another)."""
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\n\t"} | {
    c: f"\\u{c:04x}" for c in _BIDI}
"""C0 and C1 control characters (but line ends and tabs), DEL: shown as ``\\xNN``; bidirectional
formatting characters as ``\\uNNNN``."""


def printable(value: str) -> str:
    """``value`` with its control characters (an ANSI escape sequence's ESC, a bell, ...) shown as
    ``\\xNN`` instead of reaching the terminal, its bidirectional formatting characters as
    ``\\uNNNN``, and its lone surrogates (a file name decoded with
    ``surrogateescape``) as ``\\udcNN`` (no terminal encoding takes them; ``\\udc9b`` would reach
    it as the 8-bit escape introducer)."""
    return utf8_text(value).translate(_CONTROL)


def _one_line(value: str) -> str:
    """`printable`, its line ends shown as ``\\n`` / ``\\r`` too."""
    return printable(value).replace("\n", "\\n").replace("\r", "\\r")


def _text(value: str, style: str = "") -> Text:
    return Text(printable(value), style=style)


NARROW = 120
"""Terminals narrower than this get tables with fewer columns."""

PREVIEW_CHARS = 60
"""How many characters of a step's output (or a run's input/output) a table shows."""

RUN_STATUS_STYLES = {
    "pending": "yellow",
    "running": "bold blue",
    "waiting": "bold magenta",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "dim",
}
STEP_STATUS_STYLES = {"started": "yellow", "completed": "green", "failed": "bold red"}
APPROVAL_STATUS_STYLES = {
    "pending": "bold magenta",
    "approved": "green",
    "rejected": "red",
    "expired": "dim",
}


# ---- JSON shapes ----------------------------------------------------------------------------------
def run_json(run: Run) -> dict[str, JSON]:
    """Returns a run record as JSON (the design's field names, unchanged)."""
    return run.model_dump(mode="json")


def approval_json(approval: Approval, at: float | None = None) -> dict[str, JSON]:
    """Returns an approval as JSON, with ``status`` reporting an expired pending one as ``expired``."""
    data = approval.model_dump(mode="json")
    data["status"] = effective_status(approval, at).value
    return data


def run_detail_json(run: Run, steps: list[Step], approvals: list[Approval]) -> dict[str, JSON]:
    """Returns ``runs show --json``: the run record, its journal and its approvals.

    The run's ``steps`` count moves to ``step_count``; ``steps`` holds the journal entries.
    """
    data: dict[str, JSON] = {}
    for key, value in run_json(run).items():
        if key == "steps":
            data["step_count"] = value
        else:
            data[key] = value
    at = now()
    data["steps"] = [step.model_dump(mode="json") for step in steps]
    data["approvals"] = [approval_json(a, at) for a in approvals]
    return data


def dumps(value: JSON) -> str:
    """Serialises a JSON value for stdout (indented, UTF-8 kept readable; a value holding a lone
    surrogate, which is not UTF-8, all escaped: the output stays valid JSON in UTF-8)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return text if utf8_text(text) == text else json.dumps(value, indent=2)


# ---- small formatters -----------------------------------------------------------------------------
def preview(value: JSON, limit: int = PREVIEW_CHARS) -> str:
    """Returns a one-line preview of a JSON value, cut to ``limit`` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def timestamp(ts: float | None) -> str:
    """Formats epoch seconds as local ``YYYY-MM-DD HH:MM:SS`` (empty for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def age(ts: float | None, at: float | None = None) -> str:
    """Formats the time since ``ts`` compactly: ``42s``, ``5m``, ``3h``, ``2d``."""
    if ts is None:
        return ""
    seconds = max(0.0, (at if at is not None else now()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    """Formats token counts as ``in/out`` (empty when neither is known)."""
    if input_tokens is None and output_tokens is None:
        return ""
    return f"{input_tokens or 0:,}/{output_tokens or 0:,}"


SMALLEST_USD = 0.000001
"""The smallest cost shown as a number: below it (a few tokens of the cheapest models), ``<$0.000001``."""


def cost(usd: float | None) -> str:
    """Formats a cost in US dollars (empty when unknown), with six decimals below a cent, as the
    web UI: a call of a cheap model costs a few millionths (``$0.000027``, not ``$0.0000``), and
    less than a millionth is ``<$0.000001`` (not ``$0.000000``, which reads as free)."""
    if usd is None:
        return ""
    if 0 < usd < SMALLEST_USD:
        return f"<${SMALLEST_USD:.6f}"
    return "$0" if usd == 0 else f"${usd:.6f}" if abs(usd) < 0.01 else f"${usd:,.4f}"


class ModelCalls(NamedTuple):
    """What a run's journal says of its model calls (``llm`` steps), for showing its totals: a
    run's stored ``cost_usd`` sums its priced calls only, its tokens the calls that reported them."""

    llm_steps: int
    """Every ``llm`` step (superseded ones included: they ran and were billed)."""
    completed: int
    """The completed ones."""
    unpriced: int
    """Of the completed ones, those without a cost (a model not in the price table, or a
    response that reported no usage)."""
    with_usage: int
    """The ``llm`` steps that reported tokens."""

    @property
    def no_usage(self) -> bool:
        """Whether the run made model calls and none reported its tokens (its totals' 0 means
        unknown, not none)."""
        return self.llm_steps > 0 and self.with_usage == 0


def model_calls(steps: Iterable[Step]) -> ModelCalls:
    """Counts a run's model calls, priced and not (`ModelCalls`)."""
    llm = completed = unpriced = with_usage = 0
    for step in steps:
        if step.kind != StepKind.LLM:
            continue
        llm += 1
        if step.input_tokens is not None or step.output_tokens is not None:
            with_usage += 1
        if step.status == StepStatus.COMPLETED:
            completed += 1
            if step.cost_usd is None:
                unpriced += 1
    return ModelCalls(llm, completed, unpriced, with_usage)


def run_cost(usd: float | None, calls: ModelCalls | None, *, unknown: str = "—") -> str:
    """Formats a run's cost, saying so where its journal shows it covers only some of its calls.

    Args:
        usd: The run's ``cost_usd`` (the sum of its priced calls).
        calls: Its model calls (`model_calls`); None where its steps are not at hand (the cost
            is shown as it is).
        unknown: What stands for no cost at all.

    Returns:
        ``$0.0123`` when every completed model call is priced; ``≥ $0.000027 (1 of 2 model calls
        unpriced)`` when some are not (the sum is a lower bound); ``— (2 of 2 model calls
        unpriced)`` when none is.
    """
    if calls is None or calls.unpriced == 0:
        return cost(usd) if usd is not None else unknown
    note = f"({calls.unpriced} of {calls.completed} model call{'s' if calls.completed != 1 else ''} unpriced)"
    if calls.unpriced == calls.completed and not usd:
        return f"{unknown} {note}"
    shown = cost(usd or 0.0)
    # (a sum under a millionth is still more than nothing: "≥ <$0.000001" would read badly)
    return f"{'> $0' if shown.startswith('<') else '≥ ' + shown} {note}"


def _styled(value: str, styles: dict[str, str]) -> Text:
    return _text(value, style=styles.get(value, ""))


# ---- tables ---------------------------------------------------------------------------------------
def _table(title: str) -> Table:
    return Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", title_style="bold")


def runs_table(runs: list[Run], *, narrow: bool = False) -> Table:
    """Returns the ``runs list`` table (``narrow`` drops the framework, cost and created columns)."""
    table = _table(f"{len(runs)} run(s)")
    table.add_column("id", no_wrap=True, overflow="fold", style="cyan")
    table.add_column("agent", overflow="fold")
    if not narrow:
        table.add_column("framework")
    table.add_column("status", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("tokens" if narrow else "tokens in/out", justify="right", no_wrap=True)
    if not narrow:
        table.add_column("cost", justify="right", no_wrap=True)
        table.add_column("created", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    at = now()
    for run in runs:
        cells: list[Any] = [_text(run.id), _text(run.agent)]
        if not narrow:
            cells.append(_text(run.framework))
        cells += [
            _styled(run.status.value, RUN_STATUS_STYLES),
            str(run.steps),
            tokens(run.input_tokens, run.output_tokens),
        ]
        if not narrow:
            cells += [cost(run.cost_usd), timestamp(run.created_at)]
        cells.append(age(run.created_at, at))
        table.add_row(*cells)
    return table


def next_page_hint(before: str, options: dict[str, str | None], *, what: str = "runs") -> Text:
    """Returns the line after a full ``runs list`` (or ``approvals list``) page: the command that
    lists the next, older, page.

    Args:
        before: The last (oldest) id on the page.
        options: The command's other options that were given (name without dashes: value; None
            when not given), kept so the next page has the same filters.
        what: The command group listed: ``runs`` or ``approvals``.
    """
    # ``--name=value`` keeps a value that starts with a dash a value; each is one shell word
    words = [f"--{name}={value}" for name, value in options.items() if value is not None]
    command = " ".join(_shell_word(word) for word in ["agentspan", what, "list", *words, f"--before={before}"])
    return Text(f"Older {what}: ", style="dim") + Text(command)  # (all printable: `_shell_word`)


def _shell_word(word: str) -> str:
    """``word`` as one word of a POSIX shell command that a terminal shows as it is: quoted by
    shlex, or, where it holds a control character, a tab, a line end or a lone surrogate (which
    `printable` would show otherwise than the shell reads it), in bash/zsh/ksh ``$'...'`` quoting
    (not POSIX sh: dash reads it as other words, which the CLI refuses) with those
    characters escaped (a lone surrogate of ``surrogateescape`` as the byte it stands for)."""
    if printable(word) == word and "\t" not in word and "\n" not in word:  # (a line end too: one line)
        return shlex.quote(word)
    out = []
    for char in word:
        code = ord(char)
        if char in "\\'":
            out.append("\\" + char)
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of the command line
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI:
            # (a C1 or bidi character as its UTF-8 bytes: bash reads ``\\u`` only in a UTF-8 locale)
            out.append("".join(f"\\x{byte:02x}" for byte in char.encode()))
        else:
            out.append(char)
    return "$'" + "".join(out) + "'"


def steps_table(steps: list[Step], *, narrow: bool = False) -> Table:
    """Returns the journal table of ``runs show`` (``narrow`` drops duration and provider/model;
    superseded steps are dimmed)."""
    table = _table("steps")
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    # the output's preview takes what the other columns leave (it was sized first, and squeezed
    # the key and name to nothing on an 80-140 column terminal)
    table.add_column("key", overflow="fold", min_width=12)
    table.add_column("name", overflow="fold", min_width=10)
    table.add_column("status", no_wrap=True)
    if not narrow:
        table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    if not narrow:
        table.add_column("cost", justify="right", no_wrap=True)
        table.add_column("provider/model", overflow="fold", min_width=12)
    table.add_column("output", no_wrap=True, overflow="ellipsis", min_width=12, max_width=30 if narrow else 40)
    for step in steps:
        shown = _text(preview(step.error), style="red") if step.error else _text(preview(step.output))
        cells: list[Any] = [
            str(step.seq),
            step.kind.value,
            _text(step.key),
            _text(step.name or ""),
            _styled(step.status.value, STEP_STATUS_STYLES),
        ]
        if not narrow:
            cells.append("" if step.duration_ms is None else f"{step.duration_ms:.0f}")
        cells.append(tokens(step.input_tokens, step.output_tokens))
        if not narrow:
            # a model call without a cost is unpriced ("—"); other steps have none to show
            unpriced = step.kind == StepKind.LLM and step.status == StepStatus.COMPLETED
            cells.append(cost(step.cost_usd) if step.cost_usd is not None else "—" if unpriced else "")
            cells.append(_text("/".join(p for p in (step.provider, step.model) if p)))
        cells.append(shown)
        # moved aside by on_divergence="live": still what ran and cost, no longer the run's path
        table.add_row(*cells, style="dim" if step.key.startswith(SUPERSEDED) else None)
    return table


def approvals_table(
    approvals: list[Approval], *, title: str = "approvals", show_run: bool = True, narrow: bool = False
) -> Table:
    """Returns a table of approvals (``approvals list`` and ``runs show``).

    Args:
        approvals: The approvals, in display order.
        title: The table's title.
        show_run: Include the run id column (pointless when all belong to one run).
        narrow: Drop the run, requested, decided-by and reason columns (terminals under 120 columns).
    """
    show_run = show_run and not narrow
    table = _table(title)
    table.add_column("id", no_wrap=True, overflow="fold", style="cyan")
    if show_run:
        table.add_column("run", no_wrap=True, overflow="fold")
    table.add_column("step", overflow="fold")
    table.add_column("tool", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("args")
    if not narrow:
        table.add_column("requested", no_wrap=True)
        table.add_column("decided by")
        table.add_column("reason")
    at = now()
    for approval in approvals:
        cells: list[Any] = [_text(approval.id)]
        if show_run:
            cells.append(_text(approval.run_id))
        cells += [
            _text(approval.step_key),
            _text(approval.tool),
            _styled(effective_status(approval, at).value, APPROVAL_STATUS_STYLES),
            _text(preview(approval.args, 40)),
        ]
        if not narrow:
            cells.append(timestamp(approval.requested_at))
            cells += [_text(approval.decided_by or ""), _text(preview(approval.reason, 40))]
        table.add_row(*cells)
    return table


def _fields(rows: list[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, Text) else _text(str(value)))
    return grid


def run_panel(run: Run, steps: list[Step] | None = None) -> Panel:
    """Returns the summary panel of ``runs show``.

    Args:
        run: The run.
        steps: Its journal, where at hand: its cost then says how many model calls it leaves
            out (unpriced), and its tokens show as ``—`` when no model call reported any.
    """
    calls = model_calls(steps) if steps is not None else None
    rows: list[tuple[str, Any]] = [
        ("agent", run.agent),
        ("framework", run.framework),
        ("status", _styled(run.status.value, RUN_STATUS_STYLES)),
        ("created", f"{timestamp(run.created_at)} ({age(run.created_at)} ago)"),
        ("updated", timestamp(run.updated_at)),
        ("steps", run.steps),
        ("tokens in/out", "—" if calls and calls.no_usage else tokens(run.input_tokens, run.output_tokens)),
        ("cost", run_cost(run.cost_usd, calls)),
    ]
    for label, value in (
        ("session", run.session_id),
        ("idempotency key", run.idempotency_key),
        ("parent run", run.parent_run_id),
        ("lease owner", run.lease_owner),
    ):
        if value:
            rows.append((label, value))
    if run.lease_owner:
        rows.append(("lease expires", timestamp(run.lease_expires_at)))
    rows.append(("lease epoch", run.lease_epoch))
    rows.append(("input", preview(run.input, 200)))
    if run.output is not None:
        rows.append(("output", preview(run.output, 200)))
    if run.error:
        rows.append(("error", _text(run.error, style="red")))
    for n, retry in enumerate(retries_of(run.options), 1):
        by = f" by {printable(str(retry['owner']))}" if retry.get("owner") else " (left to a worker)"
        # who asked for the retry (an entry written before it was recorded has none)
        # (on one line: a line end in a name another key sent must not read as a retry of its own)
        asked = f" (asked by {_one_line(str(retry['by']))})" if retry.get("by") is not None else ""
        rows.append((f"retry {n}", Text.assemble(
            f"failed {timestamp(_number(retry.get('failed_at')))}: ", (printable(str(retry.get("error"))), "red"),
            f"; retried {timestamp(_number(retry.get('retried_at')))}{by}{asked}")))
    return Panel(_fields(rows), title=_text(f"run {run.id}"), title_align="left")


def _number(value: JSON) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def print_run(console: Console, run: Run, steps: list[Step], approvals: list[Approval]) -> None:
    """Prints ``runs show`` for humans: summary panel, journal table, approvals table."""
    parts: list[Any] = [run_panel(run, steps)]
    narrow = console.width < NARROW
    parts.append(steps_table(steps, narrow=narrow) if steps else _text("no steps journaled", style="dim"))
    if approvals:
        parts.append(approvals_table(approvals, show_run=False, narrow=narrow))
    console.print(Group(*parts))


def approval_summary(approval: Approval) -> Panel:
    """Returns a panel describing one approval (after ``approve``/``reject``)."""
    status = effective_status(approval).value
    rows: list[tuple[str, Any]] = [
        ("run", approval.run_id),
        ("step", approval.step_key),
        ("tool", approval.tool),
        ("args", preview(approval.args, 200)),
        ("status", _styled(status, APPROVAL_STATUS_STYLES)),
        ("decided by", approval.decided_by or ""),
        ("decided at", timestamp(approval.decided_at)),
    ]
    if approval.reason:
        rows.append(("reason", approval.reason))
    return Panel(_fields(rows), title=_text(f"approval {approval.id}"), title_align="left")


def doctor_table(report: dict[str, JSON]) -> Table:
    """Returns the ``doctor`` report as a two-column table."""
    rows: list[tuple[str, Any]] = []
    for key, value in report.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif value is None:
            value = ""
        rows.append((key, value))
    return _fields(rows)

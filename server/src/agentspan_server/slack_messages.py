"""The Slack messages of approvals (`agentspan_server.slack` posts them), and the button clicks
that come back (`parse_action`).

Every user-supplied text (a tool name, run id, step key, the arguments, a Slack user name) stays in
its field: besides Slack mrkdwn's ``&``, ``<`` and ``>``, its control characters and line ends are
shown as escapes (``\\n``, ``\\x1b``), its Unicode format characters (bidirectional overrides and
isolates, zero-width ones: category Cf) as ``\\u202e``-style escapes, as the web UI and the CLI show
them, and its backticks cannot close the inline code or code block around it. So a requester cannot
add lines to a message (a forged ``*Arguments:*`` block) nor make text read in another order.

The arguments are shown key by key, each value clipped on its own, so a long value cannot hide the
keys after it; the message keeps within Slack's limits (a section's text ≤ 3,000 characters, ≤ 50
blocks) and says when something was clipped or left out.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from agentspan.approvals import is_in_doubt_question
from agentspan.jsontext import utf8_text
from agentspan.records import Approval

APPROVE, REJECT = "agentspan_approve", "agentspan_reject"
SECTION_BYTES = 2900
"""The most text one section of a message holds, in UTF-8 bytes (Slack's limit is 3,000
characters, which some count as bytes: a section of non-ASCII text measured in characters could
be refused as ``invalid_blocks``, and the approval would get no message)."""
ARG_SECTIONS = 4
"""The most sections the arguments take (Slack takes ≤ 50 blocks; a long message is no use)."""
VALUE_BYTES = 600
"""The most UTF-8 bytes one argument's value shows; a longer one is clipped."""
KEY_BYTES = 100
"""The most UTF-8 bytes one argument's name shows."""
CLIPPED = "… (clipped)"
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LINE_ENDS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BACKTICK = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, closes no inline code
_FENCE = "```"


def _unicode_escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _special(char: str) -> bool:
    """Whether a character is a control (Cc), format (Cf) or line/paragraph separator one."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _inline_piece(char: str) -> str:
    """How a character of a one-line field (inline code, a plain sentence) is shown."""
    if char in _ENTITIES:
        return _ENTITIES[char]
    if char == "`":
        return _BACKTICK
    if _special(char):
        if char in _LINE_ENDS:
            return _LINE_ENDS[char]
        return f"\\x{ord(char):02x}" if ord(char) < 0xA0 else _unicode_escape(char)
    return char


def _code_piece(char: str) -> str:
    """How a character of JSON text in a code block is shown: its line ends are the JSON's own
    layout (``json.dumps`` escapes those of strings), other special characters become JSON escapes
    (``\\u202e``), and a zero-width space follows each backtick, so no three make a closing fence."""
    if char in _ENTITIES:
        return _ENTITIES[char]
    if char == "`":
        return "`\u200b"
    if char != "\n" and _special(char):
        return _unicode_escape(char)
    return char


def _size(text: str) -> int:
    """How much of a Slack limit ``text`` takes: its UTF-8 bytes (at least its characters)."""
    return len(text.encode("utf-8"))


def _render(text: str, piece: Callable[[str], str], limit: int) -> tuple[str, bool]:
    """``text`` shown piece by piece, at most ``limit`` UTF-8 bytes (`CLIPPED` included); whether
    it was clipped. An escape is never cut in half."""
    out: list[str] = []
    size = 0
    for char in utf8_text(text):
        shown = piece(char)
        size += _size(shown)
        out.append(shown)
        if size > limit:
            while out and size + _size(CLIPPED) > limit:
                size -= _size(out.pop())
            return "".join(out) + CLIPPED, True
    return "".join(out), False


def escape(text: str, limit: int = 200) -> str:
    """A user-supplied text as one line of mrkdwn or inline code: ``&``, ``<`` and ``>`` as entities,
    control characters and line ends as escapes (``\\n``, ``\\x1b``), format characters as
    ``\\uNNNN``, backticks as a look-alike that closes no code span; at most ``limit`` UTF-8 bytes."""
    return _render(text, _inline_piece, limit)[0]


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _argument_sections(args: Any) -> tuple[list[str], bool, int]:
    """The arguments as code blocks of at most `SECTION_BYTES` each (at most `ARG_SECTIONS`);
    whether a value was clipped; how many keys did not fit."""
    if not isinstance(args, dict) or not args:
        shown, clipped = _render(_json(args), _code_piece, SECTION_BYTES - 40)
        return [f"*Arguments:*\n{_FENCE}\n{shown}\n{_FENCE}"], clipped, 0
    entries: list[str] = []
    clipped = False
    for key, value in args.items():
        name, cut_name = _render(_json(str(key)), _code_piece, KEY_BYTES)
        # the value's own lines indented under its key (its strings' line ends are JSON escapes)
        shown, cut_value = _render(_json(value).replace("\n", "\n  "), _code_piece, VALUE_BYTES)
        entries.append(f"{name}: {shown}")
        clipped = clipped or cut_name or cut_value
    sections: list[list[str]] = [[]]
    size = 0
    for index, entry in enumerate(entries):
        if size + _size(entry) + 1 > SECTION_BYTES - 40:
            if len(sections) == ARG_SECTIONS:
                texts = _fenced(sections)
                return texts, clipped, len(entries) - index
            sections.append([])
            size = 0
        sections[-1].append(entry)
        size += _size(entry) + 1
    return _fenced(sections), clipped, 0


def _fenced(sections: list[list[str]]) -> list[str]:
    texts = [f"{_FENCE}\n" + "\n".join(lines) + f"\n{_FENCE}" for lines in sections]
    texts[0] = "*Arguments:*\n" + texts[0]
    return texts


def approval_blocks(approval: Approval) -> list[dict[str, Any]]:
    """The message blocks describing an approval (its tool, run, step and arguments), without buttons.

    At most 2 + `ARG_SECTIONS` blocks, each section's text within Slack's 3,000 characters.
    """
    facts = (f"*Approval needed:* `{escape(approval.tool)}`\n*Run:* `{escape(approval.run_id)}`\n"
             f"*Step:* `{escape(approval.step_key)}`")  # fmt: skip
    if is_in_doubt_question(approval):
        facts += "\n*Asks to run it again:* a process died while it ran; it may have taken effect"
    if approval.expires_at is not None:
        facts += "\n*Expires:* " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(approval.expires_at))
    texts, clipped, left_out = _argument_sections(approval.args)
    blocks = [_section(facts), *(_section(text) for text in texts)]
    if clipped or left_out:
        # the server does not know the address Slack users reach it at: the UI's path, on it
        where = f"`/ui/runs/{escape(quote(approval.run_id, safe=''), 300)}`"
        notes = []
        if left_out:
            notes.append(f"{left_out} more argument{'s' if left_out > 1 else ''} not shown")
        if clipped:
            notes.append("some values clipped")
        note = f":warning: *{'; '.join(notes).capitalize()}* — see the full arguments in the web UI ({where})"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return blocks


def request_message(approval: Approval, channel: str) -> dict[str, Any]:
    """The ``chat.postMessage`` body asking to decide an approval (buttons carry its id)."""

    def button(action_id: str, label: str, style: str) -> dict[str, Any]:
        text = {"type": "plain_text", "text": label}
        return {"type": "button", "action_id": action_id, "text": text, "style": style, "value": approval.id}

    actions = {"type": "actions", "block_id": "agentspan_decision",
               "elements": [button(APPROVE, "Approve", "primary"), button(REJECT, "Reject", "danger")]}  # fmt: skip
    text = f"Approval needed: {escape(approval.tool)} (run {escape(approval.run_id)})"
    return {"channel": channel, "text": text, "blocks": [*approval_blocks(approval), actions]}


def decided_message(decided: Approval, approved: bool, decider: str) -> dict[str, Any]:
    """The ``response_url`` body replacing an approval's message once decided (no buttons).

    Args:
        decided: The approval as decided.
        approved: Whether it was approved.
        decider: Who decided, as shown (escaped here).
    """
    verb = "Approved" if approved else "Rejected"
    outcome = f"{':white_check_mark:' if approved else ':x:'} *{verb}* by {escape(decider)}"
    blocks = [*approval_blocks(decided), {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}]
    text = f"{verb} by {escape(decider)}: {escape(decided.tool)} (run {escape(decided.run_id)})"
    return {"replace_original": True, "text": text, "blocks": blocks}


def ephemeral(text: str) -> dict[str, Any]:
    """A private reply to the user who clicked (the original message stays)."""
    return {"response_type": "ephemeral", "replace_original": False, "text": escape(text, 2900)}


# ---- interactions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SlackAction:
    """One click on an Agentspan button, from a ``block_actions`` payload."""

    user_id: str
    user_name: str
    approve: bool
    approval_id: str
    response_url: str


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def parse_action(body: bytes) -> SlackAction | None:
    """Reads a form-encoded interaction request; None when it is no click on an Agentspan button.

    Raises:
        ValueError: The body has no ``payload`` JSON object, or it misses the user, actions or
            ``response_url`` (or the value of an Agentspan button).
    """
    found = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("payload")
    if not found or len(found) != 1:
        raise ValueError("no payload field")
    try:
        payload = json.loads(found[0])
    except RecursionError:  # nested deeper than the interpreter's recursion limit
        raise ValueError("the payload is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    if payload.get("type") != "block_actions":
        return None
    user, actions, response_url = payload.get("user"), payload.get("actions"), payload.get("response_url")
    if not isinstance(user, dict) or not _text(user.get("id")) or not isinstance(actions, list):
        raise ValueError("the payload has no user id or actions")
    ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in (APPROVE, REJECT)]
    if not ours:
        return None
    if not _text(ours[0].get("value")):
        raise ValueError("the action has no approval id")
    if not isinstance(response_url, str) or urlsplit(response_url).scheme not in ("http", "https"):
        raise ValueError("the payload has no http(s) response_url")
    names = [n for n in (user.get("username"), user.get("name")) if isinstance(n, str) and n.strip()]
    raw_name: str = names[0] if names else user["id"]
    name = " ".join("".join(c for c in raw_name if c.isprintable()).split())[:80] or user["id"]
    return SlackAction(user["id"], name, ours[0]["action_id"] == APPROVE, ours[0]["value"], response_url)

"""`AgentspanPlugin`: an ADK plugin that journals every model and tool call of every agent in a
Runner's tree, and replays them after a crash.

Which Agentspan run an ADK invocation's calls belong to:

1. **Inside ``agentspan.run``** (the adapter builds the Runner): the run being executed.
2. **Inside a journaled tool** (an ``AgentTool``'s agent runs its own invocation, with the
   parent's plugins): the tool's run, with the tool's step key as a prefix.
3. **A user-built Runner**: the plugin opens one run per invocation itself and holds its lease
   while the invocation executes; running the same session again with the same message after a
   crash claims that run again and replays it (see `agentspan_adk._managed`). Approvals of such a
   run: an ``@agentspan.tool(approval_required=True)`` call that waits raises
   `agentspan.errors.ApprovalPending` out of ``runner.run_async`` (the run is ``waiting``; decide
   it from anywhere, then send the same message again); an ADK confirmation request ends the
   invocation as ADK does, with an Agentspan approval recorded for it, and the app's
   ``adk_request_confirmation`` answer (or a decision made in Agentspan first, which then wins)
   continues the run.
"""

from __future__ import annotations

from typing import Any

from google.adk.agents import BaseAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.adk.models import LlmRequest, LlmResponse
from google.adk.plugins import BasePlugin
from google.adk.tools import BaseTool, ToolContext
from google.genai import types

import agentspan
from agentspan import approvals
from agentspan.divergence import OnDivergence, check_policy
from agentspan.errors import ApprovalPending
from agentspan.runtime import tell_replaying
from agentspan.tools import DEFAULT_TOOL_OPTIONS
from agentspan_adk import _clock, _compaction, _confirmations, _managed, _mock, _nodes, _tools
from agentspan_adk._journal import Journal
from agentspan_adk._reading import agent_path, invocation_of, live_events
from agentspan_adk._roots import check_agent_root

_NESTING_KINDS = ("tool", "handoff")
_nodes.install()


class AgentspanPlugin(BasePlugin):
    """Makes a Runner's agents durable: ``Runner(..., plugins=[AgentspanPlugin()])``.

    Works with ``Runner``, ``InMemoryRunner`` and an ``App(plugins=[...])``. Add it once per
    Runner (an ``AgentTool``'s inner Runner inherits it).

    Args:
        name: The plugin's name in ADK's plugin manager.
        on_divergence: When a resumed invocation's calls no longer match its journal (the
            agents' code or prompts changed): ``"raise"`` `ReplayDivergenceError`, or go on
            ``"live"`` from the first differing call (see `agentspan.divergence`).
    """

    def __init__(self, name: str = "agentspan", *, on_divergence: OnDivergence = "raise") -> None:
        super().__init__(name=name)
        self.on_divergence = check_policy(on_divergence)
        self._journals: dict[str, Journal] = {}
        self._managed: dict[str, _managed.ManagedRun] = {}
        self.keep_journals = False
        """Keep an invocation's journal after it ends (`agentspan.run` continues paused invocations)."""

    # ---- which run an invocation belongs to -------------------------------------------------
    def journal(self, invocation_id: str) -> Journal | None:
        """The journal of an ADK invocation (None when its calls are not journaled)."""
        return self._journals.get(invocation_id)

    async def _bind(self, ic: InvocationContext, message: types.Content | None) -> Journal:
        journal = self._journals.get(ic.invocation_id)
        if journal is not None:
            return journal
        step, active = agentspan.current_step(), agentspan.active_run()
        if step is not None and step.kind in _NESTING_KINDS:
            owner = active if active is not None and active.run_id == step.run_id else next(
                (m.run for m in self._managed.values() if m.run.run_id == step.run_id and not m.ended), None)
            if owner is not None:
                journal = Journal(owner, prefix=f"{step.key}/")
        if journal is None and active is not None:
            journal = Journal(active)
        if journal is None:
            # A Runner driving a graph workflow (`Runner(node=...)`, `App(root_agent=Workflow(...))`)
            # gives its invocation no agent: in a user-built Runner, refused before a run is opened
            # (ADK wraps the error in a RuntimeError, the ConfigurationError its cause)
            check_agent_root(ic.agent)
            managed = await _managed.open_run(ic, message, on_divergence=self.on_divergence)
            self._managed[ic.invocation_id] = managed
            journal = Journal(managed.run, on_suspend=lambda: self._suspend(ic.invocation_id))
        journal.run.next_model_key = _clock.next_model_key
        # A graph workflow's invocation has no agent (its agents are nodes): keys follow node paths
        # (`Journal.workflow`), and its function nodes are journaled (`agentspan_adk._nodes`)
        journal.workflow = ic.agent is None
        if journal.workflow:
            _nodes.bind(self._journals.get)
        # ADK's events compaction calls its summarizer's model directly, seen by no callback:
        # this invocation's config gets a journaled summarizer (`agentspan_adk._compaction`)
        root = _managed.root_of(ic.agent) if isinstance(ic.agent, BaseAgent) else None
        ic.events_compaction_config = _compaction.journaled(ic.events_compaction_config, root)
        self._journals[ic.invocation_id] = journal
        return journal

    def _suspend(self, invocation_id: str) -> None:
        self._journals.pop(invocation_id, None)
        managed = self._managed.pop(invocation_id, None)
        if managed is not None:
            managed.suspend()

    # ---- run lifecycle --------------------------------------------------------------------
    async def on_user_message_callback(self, *, invocation_context: InvocationContext,
                                       user_message: types.Content) -> types.Content | None:
        journal = await self._bind(invocation_context, user_message)
        managed = self._managed.get(invocation_context.invocation_id)
        if managed is None:
            return None
        if _managed.answers_only(user_message):
            ic = invocation_context
            if managed.taken_over and _confirmations.acted_on_before(
                    [e for e in ic.session.events if e.invocation_id == ic.invocation_id], user_message):
                # an earlier attempt (a process that died, or that stopped for an approval) acted
                # on this answer already (its tool's result is in the session; `open_run` rewound
                # what came after): an answer ADK would ignore, ending the invocation short of its
                # final answer. An empty message (no part the model sees) lets the invocation go
                # on. (Read among all the session's events, rewound ones included, as ADK's
                # confirmation processor reads them.) ADK picks the agent to run from the session
                # with that message last: the agent the answer went to is run again in
                # `before_run_callback`, as it was the first time.
                managed.resume_agent = _managed.answered_agent(ic, user_message)
                return types.Content(role="user", parts=[types.Part(text="")])
            return _apply_decisions(journal, invocation_context, user_message)
        if managed.rewound:
            # The dead attempt's events were rewound; the runner picked the agent to run before
            # this callback, from the session that still had them (an agent transfer, say). A
            # returned message makes it pick again, from the rewound session.
            return user_message.model_copy(deep=True)
        return None

    async def before_run_callback(self, *, invocation_context: InvocationContext) -> types.Content | None:
        await self._bind(invocation_context, None)
        managed = self._managed.get(invocation_context.invocation_id)
        if managed is not None and managed.resume_agent is not None:
            _managed.run_agent(invocation_context, managed.resume_agent)
        return None

    async def before_agent_callback(self, *, agent: Any, callback_context: CallbackContext) -> types.Content | None:
        ic = invocation_of(callback_context)
        journal = self._journals.get(ic.invocation_id)
        if journal is not None:
            _clock.agent_started(journal, ic)
        return None

    async def after_agent_callback(self, *, agent: Any, callback_context: CallbackContext) -> types.Content | None:
        _clock.agent_ended(invocation_of(callback_context))
        return None

    async def after_run_callback(self, *, invocation_context: InvocationContext) -> None:
        _clock.invocation_ended(invocation_context.invocation_id)
        tell_replaying(None)
        journal = self._journals.get(invocation_context.invocation_id)
        if journal is not None:
            journal.cancel_pending()
            if not self.keep_journals:
                del self._journals[invocation_context.invocation_id]
        managed = self._managed.pop(invocation_context.invocation_id, None)
        if managed is None or journal is None:
            return
        if not managed.ended:
            managed.waiting_on = _request_approvals(journal, invocation_context)
        await managed.complete(journal.last_text, invocation_context)

    async def on_run_error_callback(self, *, invocation_context: InvocationContext, error: Exception) -> None:
        _clock.invocation_ended(invocation_context.invocation_id)
        tell_replaying(None)
        journal = self._journals.pop(invocation_context.invocation_id, None)
        if journal is not None:
            journal.cancel_pending()
        managed = self._managed.pop(invocation_context.invocation_id, None)
        if managed is not None:
            await managed.fail(error)

    # ---- model and tool calls ------------------------------------------------------------
    async def before_model_callback(self, *, callback_context: CallbackContext,
                                    llm_request: LlmRequest) -> LlmResponse | None:
        ic = invocation_of(callback_context)
        journal = self._journals.get(ic.invocation_id) or await self._bind(ic, None)
        recorded = journal.before_model(callback_context, llm_request, ic)
        if recorded is not None:
            response = await recorded
            if response is not None:  # (else the run went on live here: on_divergence="live")
                ic.increment_llm_call_count()  # counts against `max_llm_calls` as the live call did
                tell_replaying(True)  # (the agent's own callbacks about this call run after this one)
                return response
        tell_replaying(False)
        scripted = _mock.scripted_response(llm_request)  # None (the model is called) outside a mock run
        if scripted is not None:
            ic.increment_llm_call_count()  # counts against `max_llm_calls` as the model's answer would
        return scripted

    async def after_model_callback(self, *, callback_context: CallbackContext,
                                   llm_response: LlmResponse) -> LlmResponse | None:
        ic = invocation_of(callback_context)
        journal = self._journals.get(ic.invocation_id)
        if journal is not None and not llm_response.partial:
            journal.model_answered(ic)
        return None

    async def on_event_callback(self, *, invocation_context: InvocationContext, event: Event) -> Event | None:
        journal = self._journals.get(invocation_context.invocation_id)
        if journal is not None:
            journaling = journal.on_event(event)
            if journaling is not None:
                await journaling
            journal.run.wait_durable()  # ADK hands the event to the caller next
        return None

    async def before_tool_callback(self, *, tool: BaseTool, tool_args: dict[str, Any],
                                   tool_context: ToolContext) -> dict[str, Any] | None:
        ic = invocation_of(tool_context)
        journal = self._journals.get(ic.invocation_id) or await self._bind(ic, None)
        call, journaled = journal.before_tool(tool, tool_args, tool_context, ic)
        tell_replaying(journaled)  # for the agent's `after_tool` callbacks, which ADK runs for a replayed call too
        if journaled:
            return await journal.replay_tool(call)  # type: ignore[no-any-return]
        _tools.park(call)
        return None


def _request_approvals(journal: Journal, ic: InvocationContext) -> list[str]:
    """Records an approval for each confirmation the invocation ended waiting on; their keys.

    Read among the events ADK's rewinds leave: a request a rewind dropped (`_managed`) is no longer
    one ADK routes an answer to."""
    events = [e for e in live_events(ic.session.events) if e.invocation_id == ic.invocation_id]
    keys = []
    for request in _confirmations.pending_requests(events):
        key = _confirmations.approval_key(journal, request, _path_of(ic, request.author), ic)
        try:
            _confirmations.decide(journal.run, [(request, key, DEFAULT_TOOL_OPTIONS)])
        except ApprovalPending:
            keys.append(key)
    return keys


def _apply_decisions(journal: Journal, ic: InvocationContext, message: types.Content) -> types.Content | None:
    """An answer to a confirmation request: decides its pending approval, or, when the approval
    was decided in Agentspan first, replaces the answer with that decision."""
    requests = {r.call.id: r for r in _confirmations.pending_requests(
        [e for e in live_events(ic.session.events) if e.invocation_id == ic.invocation_id])}
    changed, parts = False, []
    for part in message.parts or []:
        response = part.function_response
        request = requests.get(response.id) if response is not None else None
        if request is None:
            parts.append(part)
            continue
        key = _confirmations.approval_key(journal, request, _path_of(ic, request.author), ic)
        confirmed = bool((response.response or {}).get("confirmed"))  # type: ignore[union-attr]
        decision = approvals.answered(journal.run, key=key, tool=request.tool, args=request.args,
                                      approved=confirmed, by="adk")
        if decision is not None:
            part, changed = _confirmations.reply(request, decision), True
        parts.append(part)
    return types.Content(role=message.role or "user", parts=parts) if changed else None


def _path_of(ic: InvocationContext, author: str) -> str:
    # the ignores: ADK 2 types ic.agent BaseAgent | BaseNode | None; the plugin serves agent trees
    agent = _managed.root_of(ic.agent).find_agent(author) or ic.agent  # type: ignore[arg-type]
    return agent_path(agent)  # type: ignore[arg-type]

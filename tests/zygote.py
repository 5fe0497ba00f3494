"""Child processes for the crash tests, forked from a parent that has the frameworks imported.

A fresh interpreter spends ~3 s importing openai-agents (2-3 s for LangGraph or ADK) before a
crash test's child runs a single step, and most crash tests start two or three children. The
zygote is the crash kit's own fork server (`agentspan.testing._forkserver`) with every framework
preloaded: one process per test session that forks a child per request. Each child is still a real
process of its own (own pid, killed by a real SIGKILL, its own store connections, threads and
exit), running its script as ``__main__`` with the test's environment, arguments and working
directory, its stdout and stderr pipes of the test's.

Set ``AGENTSPAN_TESTS_FORK=0`` to start every child as a fresh interpreter instead.
"""

from __future__ import annotations

import os

from agentspan.adapters import registered
from agentspan.testing._forkserver import ForkedChild, ForkServer, fork_supported

PRELOAD = (
    "agentspan", "agentspan.runtime", "agentspan.api", "agentspan_openai_agents.testing",
    "langchain_core.language_models.fake_chat_models", "agentspan_adk.testing",
)
"""What every child would import anyway besides the adapters and their frameworks (never the tests'
own modules, which hold state)."""


def preload() -> tuple[str, ...]:
    """`PRELOAD`, then each installed adapter's module and the framework modules it names."""
    return (*PRELOAD, *(m for a in registered() for m in (type(a).__module__, *a.preload)))


class Zygote:
    """The test session's fork server with `PRELOAD` imported (started on first use)."""

    def __init__(self, server: ForkServer) -> None:
        self.server = server

    @classmethod
    def get(cls) -> Zygote:
        return cls(ForkServer.get(preload()))

    def spawn(self, script: str, args: list[str], env: dict[str, str]) -> ForkedChild:
        """Forks a child running ``script`` with ``args`` and ``env``; its stdout and stderr are pipes."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            return self.server.spawn(script=script, args=args, env=env, cwd=os.getcwd(), fds=[out_w, err_w],
                                     read_fds=(out_r, err_r))
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)


def fork_enabled() -> bool:
    """Whether children are forked by the zygote (``AGENTSPAN_TESTS_FORK``, default on, Linux only)."""
    return os.environ.get("AGENTSPAN_TESTS_FORK", "1") != "0" and fork_supported()

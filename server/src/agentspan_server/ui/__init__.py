"""The Agentspan web UI: server-rendered pages of runs, audit trails and approvals at ``/ui``.

`install_ui` adds it to an app; `is_ui_path` tells which paths it answers (the API-key middleware
leaves them to the UI's own sessions).
"""

from agentspan_server.ui.render import is_ui_path
from agentspan_server.ui.routes import WebUi, install_ui

__all__ = ["WebUi", "install_ui", "is_ui_path"]

"""The web app: the approvals inbox for signed-in approvers and the ticket intake API.

It calls the same app API the CLI calls (`TriageApp`), never the graph or the stores directly.
"""

from triage.web.app import WebContext, create_app
from triage.web.settings import WebSettings

__all__ = ["WebContext", "WebSettings", "create_app"]

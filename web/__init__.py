"""web: the example app, the dashboard, the REST API and the websocket (``python -m web``)."""

from rsmq_core import __version__ as __version__

"""Web display for real-time neurofeedback: participant and operator pages, and a JSON-line sender.

:class:`DisplayServer` serves the pages (Starlette + uvicorn, in a background thread) and pushes each
volume's record to them over a WebSocket; :class:`FeedbackSender` sends the same records as JSON lines
over UDP/TCP to a stimulus program such as PsychoPy.
"""

from __future__ import annotations

from theramark.realtime.display.sender import FeedbackSender, record_to_json
from theramark.realtime.display.server import DisplayServer

__all__ = ["DisplayServer", "FeedbackSender", "record_to_json"]

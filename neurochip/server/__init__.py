"""NeuroChip as a service: an HTTP API (``neurochip serve``) over the library's workflow.

:mod:`neurochip.server.renders` holds the render jobs (the library's
:func:`~neurochip.arrangement.render`: a take set or stems, on one engine);
:mod:`neurochip.server.app` is the FastAPI app over them and the take library. Needs the
``server`` extra (FastAPI, uvicorn, sse-starlette).
"""

from neurochip.server.app import ServerLimits, create_app
from neurochip.server.renders import RenderRequest, Renders, parse_render_request

__all__ = ["RenderRequest", "Renders", "ServerLimits", "create_app", "parse_render_request"]

"""Open-model entry point (``idsim load --rate``): users start requests on a schedule."""
from loadtest.openusers import OpenResolver  # noqa: F401
from loadtest import requestlog  # noqa: F401,E402 - --idsim-request-log (per-phase summaries)

"""The mixed scenario under a ramping load shape (the shape sets user counts over time)."""
from loadtest.shapes import Ramp  # noqa: F401
from loadtest.users import Operator, Registrant, Resolver  # noqa: F401
from loadtest import requestlog  # noqa: F401 - --idsim-request-log (per-phase summaries)

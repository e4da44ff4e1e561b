"""Locust entry point: ``locust -f loadtest/locustfile.py --host http://127.0.0.1:8000``.

Pick users by name (``Resolver Registrant Operator``) or get all three by weight.
"""
from loadtest.users import Operator, Registrant, Resolver  # noqa: F401
from loadtest import requestlog  # noqa: F401,E402 - --idsim-request-log (per-phase summaries)

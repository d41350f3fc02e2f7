"""Stand-ins for the systems of the example integrations, and the deployment that joins them.

The shop, the carrier's shipping API, the marketing tool, the mail server and
the CRM, inventory and accounting databases behave like the real ones where
it matters to an integration: they check what they are sent, answer with the
status codes real APIs use, fail now and then, and sign their webhooks. esb
runs between them as real ``esb run`` processes. ``python -m demo`` is
``make demo``; tests/integration/test_integrations.py runs the same
deployment and asserts on what each system holds.
"""

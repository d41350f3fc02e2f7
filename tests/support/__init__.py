"""Helpers shared by the test suites: broker discovery, private nodes, esb processes."""

"""Test doubles: stand-ins for external services that the studio talks to over real HTTP."""

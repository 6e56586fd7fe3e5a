"""Thin wrappers around the systems the studio talks to, with domain verbs and domain errors."""

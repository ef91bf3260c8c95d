"""The JSON API (SPEC §6): endpoints, request and response schemas, CSV exports, authentication."""

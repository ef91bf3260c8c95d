"""The JSON API: endpoints, request and response schemas, CSV exports, authentication."""

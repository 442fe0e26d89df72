"""Picool merchant portal: the web client the gateway serves at /portal (static assets inside the package)."""

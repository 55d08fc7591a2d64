"""The web interface: REST API, websockets and the live dashboard."""

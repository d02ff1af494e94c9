"""ingest: the HTTP API client systems call to send WhatsApp messages."""

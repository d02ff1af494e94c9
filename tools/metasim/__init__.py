"""A faithful simulator of Meta's WhatsApp Cloud API (Graph API sends + webhooks). See README.md."""

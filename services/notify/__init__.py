"""notify: the platform's events as signed webhooks to client endpoints, and email alerts."""

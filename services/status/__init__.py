"""status: receives Meta's webhooks and turns them into message state and events."""

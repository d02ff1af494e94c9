"""sender: delivers approved messages to Meta's Graph API, paced to Meta's limits."""

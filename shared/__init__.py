"""Code shared by every Hala Whatsup service: message schemas, Kafka/Mongo helpers, errors,
settings, logging, metrics and HTTP helpers. Nothing here knows about a particular service."""

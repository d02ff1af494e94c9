"""admin: the operator's CLI `hala` (accounts, WABAs, numbers, API keys, credit, templates)."""

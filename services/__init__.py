"""Hala Whatsup's services. Each is a package run as `python -m services.<name>`; services never
import each other, only `shared`."""

"""contact-pipeline: the system of record for marketing contacts."""

__version__ = "0.1.0"

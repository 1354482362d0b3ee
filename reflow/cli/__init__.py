"""The ``reflow`` command; the only package that prints."""

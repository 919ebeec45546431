"""Clicks: the click type, Gaussian click maps and simulated users."""

from clickadapt.clicks.click import Click

__all__ = ["Click"]

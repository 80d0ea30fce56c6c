"""Integration service for the cross-sector cardiac rehabilitation pathway (Region Nordjylland)."""

__version__ = "0.1.0"

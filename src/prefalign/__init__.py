"""prefalign: feedback with margins -> validated preference pairs -> reward models and policies."""

__version__ = "0.1.0"

"""ClinicalAI: run trained networks on medical volumes and judge what they say."""

__version__ = "0.1.0"

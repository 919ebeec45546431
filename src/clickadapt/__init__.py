"""clickadapt: interactive medical image segmentation that keeps learning from its users' clicks.

Implements OAIMS (Xu et al., "Continuous Online Adaptation Driven by User Interaction for Medical
Image Segmentation", arXiv 2503.06717 / ICLR 2026) and its baselines, plus a web application.
"""

__version__ = "0.1.0"

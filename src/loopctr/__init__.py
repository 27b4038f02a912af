"""loopctr: loop-scaled Transformers and strong baselines for click-through-rate prediction."""

__version__ = "0.1.0"

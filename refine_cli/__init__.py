"""refine-masks: re-predict instance masks at 112x112 with a RefineMask head."""

__version__ = "0.1.0"

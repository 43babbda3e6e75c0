"""silverlabel: label text with an LLM teacher, train a small student on it, and measure what that costs."""

__version__ = "0.1.0"

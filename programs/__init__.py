"""DSPy programs and experiments built on fermi_dspy."""

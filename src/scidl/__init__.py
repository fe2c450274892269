"""SciDL."""

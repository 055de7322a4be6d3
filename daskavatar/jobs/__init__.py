"""Job specification, execution stages and reports."""

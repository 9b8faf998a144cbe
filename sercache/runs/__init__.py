"""Reading a finished run: its record, report (tables, plots, HTML), re-evaluation and predict."""

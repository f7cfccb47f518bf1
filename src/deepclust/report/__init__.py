"""What a person reads: ``report.html`` of a run or a comparison (``page``) and the PNG plots (``plots``)."""

from .page import figure_data_uri, try_write_report, write_comparison_report, write_report

__all__ = ["figure_data_uri", "try_write_report", "write_comparison_report", "write_report"]

"""From the MLflow store to a comparison report: cells, statistics, sections, figures,
rendering, export."""

"""A suite file -> a validated Suite -> cells (and, with a search, trials and follow-ups)."""

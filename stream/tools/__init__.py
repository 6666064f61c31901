"""Command-line tools: ``streamrec`` itself, the demo, live replay of a dataset, the datasets."""

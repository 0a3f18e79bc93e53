"""Results: the one row schema, statistics over rows (ASR, Wilson intervals, pooling), typed summaries."""

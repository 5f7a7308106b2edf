"""The release follow-up graph's nodes: find the fixed tickets, summarise the notes, approve, close, notify, report."""

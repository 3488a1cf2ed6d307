"""AiiDA-side tools: local computer/code setup, provenance queries."""

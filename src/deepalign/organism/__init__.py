"""The model organism: a tiny Llama on a harmless synthetic world that shows shallow alignment."""

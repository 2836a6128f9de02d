"""Using a trained run: generating text (``sampling``), scoring held-out text in nats, bits per
character and perplexity (``scoring``), and export as a SavedModel plain TensorFlow loads (``export``)."""

"""Everything that exists for speed, beside the model it speeds up."""

"""ud730 problem 3: a sequence-to-sequence LSTM that mirrors every word of a line."""

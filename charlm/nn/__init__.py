"""The model: recurrent cells behind one interface (``cells``: LSTM, GRU, Elman RNN) and the
language model that stacks them between an embedding and a softmax (``model``)."""

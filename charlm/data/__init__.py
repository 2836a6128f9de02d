"""From text to batches: corpora (files, folders of archives, named downloads) -> the vocabulary and
tokenizers (char, bigram) -> the train/validation split -> the BatchGenerator.  Plain numpy: nothing
here imports TensorFlow."""

"""The generative retriever: SID vocabulary, the level-restricted BART model, the compiled SID
trie and the fast constrained beam search."""

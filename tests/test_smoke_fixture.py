def test_tiny_batch_shapes(tiny_batch, tiny_dataset):
    assert tiny_batch.label.shape == (64,)
    history = tiny_batch.jagged("item_history")
    assert history.rows == 64 and set(history.values) == {"item_history", "cate_history"}
    assert history.values["item_history"].shape == history.values["cate_history"].shape == (int(history.lengths.sum()),)
    assert set(tiny_dataset.split_names) == {"train", "valid", "test"}

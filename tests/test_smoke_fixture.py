def test_tiny_batch_shapes(tiny_batch, tiny_dataset):
    assert tiny_batch["_label"].shape == (64,)
    assert tiny_batch["item_history"].shape[0] == 64
    assert tiny_batch["item_history"].shape == tiny_batch["cate_history"].shape
    assert set(tiny_dataset.split_names) == {"train", "valid", "test"}

"""Building blocks shared by the models: a layer used by two models lives here, once."""

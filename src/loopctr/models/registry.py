"""The model registry: model name -> class, and building a model by name.

Model modules register their class on import (`@register("name")`, from this module); `loopctr.models`
imports every model module, so importing the package fills `MODELS`.
"""

from __future__ import annotations

from loopctr.errors import UserError
from loopctr.models.base import CTRModel, ModelConfig

MODELS: dict[str, type[CTRModel]] = {}


def register(name: str):
    def wrap(cls):
        MODELS[name] = cls
        cls.name = name
        return cls

    return wrap


def model_class(name: str) -> type[CTRModel]:
    if name not in MODELS:
        from difflib import get_close_matches

        close = get_close_matches(name, list(MODELS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown model '{name}'{hint} (available: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def build_model(name: str, schema, vocab_sizes, config: ModelConfig | None = None,
                pretrained: dict | None = None) -> CTRModel:
    """A freshly initialised model. `pretrained` maps the dataset's vectors (pretrained tables by vocabulary,
    content vectors as "content:<vocab>", cross features as `data.dataset.cross_vector_name`) to arrays (copied
    in), or just their sizes (tables of that shape, for weights that a checkpoint will fill). The model's schema
    is the dataset's with a numeric field per pair of `model.cross_features`."""
    cls = model_class(name)
    config = config or cls.config_class()
    model = cls(schema.with_cross_features(config.cross_features), vocab_sizes, config)
    pretrained = pretrained or {}
    model.use_pretrained({name: v if isinstance(v, int) else v.shape[-1] for name, v in pretrained.items()})
    model.reset_parameters()
    arrays = {name: v for name, v in pretrained.items() if not isinstance(v, int)}
    if arrays:  # tables without pretrained vectors (pretrained_usage=none) are skipped
        model.load_vectors(arrays)
    return model
